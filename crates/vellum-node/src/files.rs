//! Small files of the data directory, written durably.

use std::io;
use std::path::Path;

pub use vellum_ledger::files::write_durably;

/// Reads a file, naming it in the error.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
