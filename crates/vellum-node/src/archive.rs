//! An archive of the ledger in object storage (Azure Blob Storage, S3-compatible stores, or a
//! directory), through the `object_store` crate.
//!
//! Committed chunks (`ledger_A-B.committed`) and committed snapshots never change, so they are
//! copied as they are, under `PREFIX/ledger/` and `PREFIX/snapshots/`. The primary copies what
//! the store lacks ([`Archiver`]); any node, or `vellum audit --archive`, reads it back.
//! Copies are idempotent (same name, same bytes), so a new primary that copies a chunk again
//! does no harm.
//!
//! Where to archive is a URL (`az://CONTAINER/PREFIX`, `s3://BUCKET/PREFIX`,
//! `file:///DIR`) and options (`object_store`'s configuration keys, e.g. `account_name`,
//! `access_key`, `use_emulator`, `endpoint`, `allow_http`, `region`), on top of the
//! `AZURE_*` and `AWS_*` environment variables.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Why the archive could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The URL or an option is not understood.
    #[error("archive {0}")]
    Config(String),
    /// The store refused or failed.
    #[error("archive store: {0}")]
    Store(#[from] object_store::Error),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the archive is: a URL and `object_store` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// `az://CONTAINER/PREFIX`, `s3://BUCKET/PREFIX` or `file:///DIR`.
    pub url: String,
    /// Options for the store (`KEY=VALUE`), applied over the environment's.
    pub options: Vec<(String, String)>,
}

impl ArchiveConfig {
    /// Reads `KEY=VALUE` options.
    pub fn new(url: impl Into<String>, options: &[String]) -> Result<ArchiveConfig, ArchiveError> {
        let options = options
            .iter()
            .map(|o| {
                o.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| ArchiveError::Config(format!("option {o:?} is not KEY=VALUE")))
            })
            .collect::<Result<_, _>>()?;
        Ok(ArchiveConfig {
            url: url.into(),
            options,
        })
    }
}

/// An opened archive.
#[derive(Debug, Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
}

/// A chunk or snapshot in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// Its file name (`ledger_1-120.committed`).
    pub name: String,
    /// Its size.
    pub size: u64,
}

impl Archive {
    /// Opens the store `cfg` names (no request is made).
    pub fn open(cfg: &ArchiveConfig) -> Result<Archive, ArchiveError> {
        let url = url::Url::parse(&cfg.url)
            .map_err(|e| ArchiveError::Config(format!("URL {:?}: {e}", cfg.url)))?;
        let (scheme, prefix) = object_store::ObjectStoreScheme::parse(&url)
            .map_err(|e| ArchiveError::Config(format!("URL {:?}: {e}", cfg.url)))?;
        let bad =
            |k: &str, e: object_store::Error| ArchiveError::Config(format!("option {k:?}: {e}"));
        let store: Arc<dyn ObjectStore> = match scheme {
            object_store::ObjectStoreScheme::MicrosoftAzure => {
                let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(cfg.url.clone());
                for (k, v) in &cfg.options {
                    b = b.with_config(k.parse().map_err(|e| bad(k, e))?, v.clone());
                }
                Arc::new(b.build()?)
            }
            object_store::ObjectStoreScheme::AmazonS3 => {
                let mut b =
                    object_store::aws::AmazonS3Builder::from_env().with_url(cfg.url.clone());
                for (k, v) in &cfg.options {
                    b = b.with_config(k.parse().map_err(|e| bad(k, e))?, v.clone());
                }
                Arc::new(b.build()?)
            }
            object_store::ObjectStoreScheme::Local => {
                if !cfg.options.is_empty() {
                    return Err(ArchiveError::Config(
                        "a file:// archive takes no options".into(),
                    ));
                }
                let dir = url
                    .to_file_path()
                    .map_err(|()| ArchiveError::Config(format!("URL {:?}", cfg.url)))?;
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
                return Ok(Archive {
                    store: Arc::new(store),
                    prefix: StorePath::default(),
                });
            }
            other => {
                return Err(ArchiveError::Config(format!(
                    "{other:?} stores are not supported: use az://, s3:// or file://"
                )));
            }
        };
        Ok(Archive { store, prefix })
    }

    fn path(&self, kind: &str, name: &str) -> StorePath {
        self.prefix.clone().join(kind).join(name)
    }

    /// The committed chunks (`kind` "ledger") or snapshots ("snapshots") the archive holds, by
    /// name.
    pub async fn list(&self, kind: &str) -> Result<Vec<Archived>, ArchiveError> {
        let prefix = self.prefix.clone().join(kind);
        let mut out = Vec::new();
        let mut items = self.store.list(Some(&prefix));
        while let Some(item) = items.next().await {
            let meta = item?;
            if let Some(name) = meta.location.filename()
                && name.ends_with(".committed")
            {
                out.push(Archived {
                    name: name.to_owned(),
                    size: meta.size,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Copies the local file `path` to the archive as `kind/NAME`.
    pub async fn put(&self, kind: &str, path: &Path) -> Result<u64, ArchiveError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ArchiveError::Config(format!("{}: no file name", path.display())))?;
        let bytes = tokio::fs::read(path).await.map_err(io(path))?;
        let n = bytes.len() as u64;
        self.store
            .put(&self.path(kind, name), PutPayload::from(bytes))
            .await?;
        Ok(n)
    }

    /// The bytes of `kind/name`.
    pub async fn get(&self, kind: &str, name: &str) -> Result<Vec<u8>, ArchiveError> {
        Ok(self
            .store
            .get(&self.path(kind, name))
            .await?
            .bytes()
            .await?
            .to_vec())
    }

    /// The size of `kind/name` in the archive (`None`: it is not there).
    pub async fn size(&self, kind: &str, name: &str) -> Result<Option<u64>, ArchiveError> {
        match self.store.head(&self.path(kind, name)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Downloads `chunks` (from [`Archive::list`] of "ledger") to `dir` (created), calling
    /// `progress` after each; returns how many.
    pub async fn download_ledger(
        &self,
        chunks: &[Archived],
        dir: &Path,
        mut progress: impl FnMut(&Archived),
    ) -> Result<usize, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for c in chunks {
            let bytes = self.get("ledger", &c.name).await?;
            let path = dir.join(&c.name);
            tokio::fs::write(&path, bytes).await.map_err(io(&path))?;
            progress(c);
        }
        Ok(chunks.len())
    }
}

/// What the archiver has copied (for `/node/health` and the metrics).
#[derive(Debug, Default)]
pub struct ArchiveProgress {
    /// Chunks the archive holds, as this node knows.
    pub chunks: AtomicU64,
    /// The last seqno of the newest chunk archived.
    pub through: AtomicU64,
    /// Snapshots the archive holds, as this node knows.
    pub snapshots: AtomicU64,
}

/// The last seqno of a committed chunk's name (`ledger_A-B.committed` → B).
pub fn chunk_last_seqno(name: &str) -> Option<u64> {
    let range = name.strip_prefix("ledger_")?.strip_suffix(".committed")?;
    range.split_once('-')?.1.parse().ok()
}

/// Copies a node's committed chunks and snapshots to the archive.
#[derive(Debug)]
pub struct Archiver {
    archive: Archive,
    /// Names known to be in the archive (listed once, then added as copied).
    known: Option<BTreeSet<String>>,
    /// Shared with the node's health.
    pub progress: Arc<ArchiveProgress>,
}

impl Archiver {
    /// An archiver for `archive`.
    pub fn new(archive: Archive) -> Archiver {
        Archiver {
            archive,
            known: None,
            progress: Arc::default(),
        }
    }

    /// Copies what `ledger_dir` and `snapshot_dir` hold, committed, and the archive lacks;
    /// returns how many files it copied.
    pub async fn copy_new(
        &mut self,
        ledger_dir: &Path,
        snapshot_dir: &Path,
    ) -> Result<usize, ArchiveError> {
        let mut known = match self.known.take() {
            Some(k) => k,
            None => {
                let mut k = BTreeSet::new();
                for kind in ["ledger", "snapshots"] {
                    for a in self.archive.list(kind).await? {
                        k.insert(format!("{kind}/{}", a.name));
                    }
                }
                k
            }
        };
        let mut copied = 0;
        let result = async {
            for (kind, dir) in [("ledger", ledger_dir), ("snapshots", snapshot_dir)] {
                let mut names: Vec<String> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".committed"))
                    .filter(|n| !known.contains(&format!("{kind}/{n}")))
                    .collect();
                names.sort();
                for name in names {
                    self.archive.put(kind, &dir.join(&name)).await?;
                    tracing::debug!(file = %name, "archived");
                    known.insert(format!("{kind}/{name}"));
                    copied += 1;
                }
            }
            Ok::<(), ArchiveError>(())
        }
        .await;
        let chunks: Vec<&String> = known.iter().filter(|n| n.starts_with("ledger/")).collect();
        self.progress
            .chunks
            .store(chunks.len() as u64, Ordering::Relaxed);
        let through = chunks
            .iter()
            .filter_map(|n| chunk_last_seqno(n.trim_start_matches("ledger/")))
            .max()
            .unwrap_or(0);
        self.progress.through.store(through, Ordering::Relaxed);
        self.progress.snapshots.store(
            known.iter().filter(|n| n.starts_with("snapshots/")).count() as u64,
            Ordering::Relaxed,
        );
        self.known = Some(known);
        result.map(|()| copied)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn options_and_names() {
        let c = ArchiveConfig::new("az://c/p", &["use_emulator=true".into()]).unwrap();
        assert_eq!(c.options, vec![("use_emulator".into(), "true".into())]);
        assert!(ArchiveConfig::new("az://c/p", &["novalue".into()]).is_err());
        assert_eq!(chunk_last_seqno("ledger_1-120.committed"), Some(120));
        assert_eq!(chunk_last_seqno("ledger_121"), None);
        assert!(Archive::open(&ArchiveConfig::new("ftp://x/y", &[]).unwrap()).is_err());
        let bad = ArchiveConfig::new("az://c/p", &["no_such_key=1".into()]).unwrap();
        assert!(Archive::open(&bad).is_err());
    }

    #[tokio::test]
    async fn a_directory_archive_copies_committed_files_once() {
        let tmp = tempfile::tempdir().unwrap();
        let (ledger, snaps) = (tmp.path().join("ledger"), tmp.path().join("snapshots"));
        std::fs::create_dir_all(&ledger).unwrap();
        std::fs::create_dir_all(&snaps).unwrap();
        std::fs::write(ledger.join("ledger_1-10.committed"), b"one").unwrap();
        std::fs::write(ledger.join("ledger_11"), b"open").unwrap();
        std::fs::write(snaps.join("snapshot_10_12.committed"), b"snap").unwrap();
        let url = format!("file://{}", tmp.path().join("archive").display());
        let archive = Archive::open(&ArchiveConfig::new(url, &[]).unwrap()).unwrap();
        let mut a = Archiver::new(archive.clone());
        assert_eq!(a.copy_new(&ledger, &snaps).await.unwrap(), 2);
        assert_eq!(a.copy_new(&ledger, &snaps).await.unwrap(), 0);
        std::fs::write(ledger.join("ledger_11-20.committed"), b"two").unwrap();
        assert_eq!(a.copy_new(&ledger, &snaps).await.unwrap(), 1);
        assert_eq!(a.progress.through.load(Ordering::Relaxed), 20);
        let out = tmp.path().join("out");
        let chunks = archive.list("ledger").await.unwrap();
        assert_eq!(
            archive
                .download_ledger(&chunks, &out, |_| {})
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            std::fs::read(out.join("ledger_11-20.committed")).unwrap(),
            b"two"
        );
        assert!(!out.join("ledger_11").exists());
    }
}
