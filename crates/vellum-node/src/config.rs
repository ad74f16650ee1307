//! Why a configuration cannot run: one error type for every setting's rule, so that `vellum
//! serve`, the TOML file and library callers all get the same answer, and nothing is clamped
//! silently. The rules live with the settings ([`crate::NodeConfig::validate`],
//! [`crate::server::Limits::validate`], [`crate::service::ServiceConfig::validate`]).

use std::fmt::Display;

/// A setting that breaks its rule. Settings are named as in the TOML file (and, with `--`, on
/// the command line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value outside what the setting may be.
    #[error("{setting} must be {rule} (it is {value})")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What it must be.
        rule: &'static str,
        /// What it is.
        value: String,
    },
    /// A setting that needs another one set.
    #[error("{setting} needs {needs}")]
    Needs {
        /// The setting.
        setting: &'static str,
        /// What else it needs.
        needs: &'static str,
    },
}

/// `Ok` if `ok`, else the rule `setting` breaks with `value`.
pub(crate) fn rule(
    ok: bool,
    setting: &'static str,
    rule: &'static str,
    value: impl Display,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            setting,
            rule,
            value: value.to_string(),
        })
    }
}
