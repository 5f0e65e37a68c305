//! The broker's dynamic settings (Kafka's per-broker dynamic configs), altered with AlterConfigs
//! and IncrementalAlterConfigs on the BROKER resource "0" and kept in the data directory
//! (`broker-configs.meta`, replaced atomically), so that they outlive restarts as Kafka's do.
//!
//! Two kinds are taken:
//! - `advertised.listeners`: the address clients are told to connect to, as
//!   `PLAINTEXT://HOST:PORT` (the one listener). It applies at once, to Metadata,
//!   FindCoordinator and DescribeCluster answers, and overrides the server's configured address
//!   until deleted.
//! - the settings of the security mechanisms the front end does not serve (`sasl.*`, `ssl.*`,
//!   `listener.name.*`): kept and described, with no effect, as on a Kafka broker whose
//!   listeners use neither SASL nor TLS.
//!
//! Any other setting is fixed when the server starts: altering it is refused (INVALID_CONFIG).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::io::StdFs;
use crate::storage::meta;

const FILE: &str = "broker-configs.meta";
const VERSION: u32 = 1;

/// The setting that changes the advertised address.
pub(super) const ADVERTISED_LISTENERS: &str = "advertised.listeners";

/// The most dynamic settings kept, the longest name and the longest value: bounds on what
/// requests can make the file hold.
const MAX_SETTINGS: usize = 1_000;
const MAX_NAME_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 4_096;

/// One change to the dynamic settings: a value, or `None` to delete the setting.
pub(super) type Change<'a> = (&'a str, Option<&'a str>);

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    settings: BTreeMap<String, String>,
}

/// The broker's dynamic settings.
pub(super) struct BrokerConfigs {
    path: PathBuf,
    settings: RwLock<Arc<BTreeMap<String, String>>>,
    /// Held by a change from reading the settings to installing the new ones.
    changing: Mutex<()>,
}

impl std::fmt::Debug for BrokerConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfigs").field("path", &self.path).finish()
    }
}

/// Whether `name` is a setting that may be altered.
pub(super) fn alterable(name: &str) -> bool {
    name == ADVERTISED_LISTENERS
        || name.starts_with("sasl.")
        || name.starts_with("ssl.")
        || name.starts_with("listener.name.")
}

/// Whether `name` is a secret (a password, a JAAS configuration, a private key): Kafka keeps
/// those encrypted and never shows them. None is kept here, since nothing would use it.
fn secret(name: &str) -> bool {
    name.contains("password") || name.ends_with("jaas.config") || name.ends_with("keystore.key")
}

/// The host and port of a `PLAINTEXT://HOST:PORT` listener.
fn listener(value: &str) -> std::result::Result<(String, u16), String> {
    let address = value
        .trim()
        .strip_prefix("PLAINTEXT://")
        .ok_or_else(|| format!("{value:?} is not one PLAINTEXT://HOST:PORT listener"))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{value:?} has no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("{value:?} has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(',') {
        return Err(format!("{value:?} names no single host"));
    }
    Ok((host.to_string(), port))
}

impl BrokerConfigs {
    /// The settings kept in `dir`.
    pub(super) fn open(dir: &Path) -> Result<BrokerConfigs> {
        let path = dir.join(FILE);
        let settings = match meta::read::<Stored>(&path)? {
            None => BTreeMap::new(),
            Some(s) if s.version > VERSION => {
                return Err(Error::UnsupportedFormat {
                    path,
                    found: s.version,
                    supported: VERSION,
                });
            }
            Some(s) => s.settings,
        };
        Ok(BrokerConfigs {
            path,
            settings: RwLock::new(Arc::new(settings)),
            changing: Mutex::new(()),
        })
    }

    /// The host and port clients are told to connect to, by a server configured to advertise
    /// `configured`.
    pub(super) fn advertised(&self, configured: &(String, u16)) -> (String, u16) {
        self.settings
            .read()
            .get(ADVERTISED_LISTENERS)
            .and_then(|v| listener(v).ok())
            .unwrap_or_else(|| configured.clone())
    }

    /// The dynamic settings, by name.
    pub(super) fn settings(&self) -> Arc<BTreeMap<String, String>> {
        self.settings.read().clone()
    }

    /// Applies `changes` (after clearing every setting, with `replace`, as AlterConfigs does),
    /// all or none; with `validate_only` only checks them.
    pub(super) fn alter(
        &self,
        changes: &[Change<'_>],
        replace: bool,
        validate_only: bool,
    ) -> std::result::Result<(), String> {
        for &(name, value) in changes {
            if name.len() > MAX_NAME_BYTES {
                return Err(format!("a setting's name is at most {MAX_NAME_BYTES} bytes"));
            }
            if !alterable(name) {
                return Err(format!("{name} cannot be altered while the broker runs"));
            }
            if secret(name) && value.is_some() {
                return Err(format!(
                    "{name} is a secret, and secrets are not kept: no TLS or SASL is served"
                ));
            }
            if let Some(value) = value {
                if value.len() > MAX_VALUE_BYTES {
                    return Err(format!("the value of {name} is over {MAX_VALUE_BYTES} bytes"));
                }
                if name == ADVERTISED_LISTENERS {
                    listener(value)?;
                }
            }
        }
        let _changing = self.changing.lock();
        let mut next = if replace {
            BTreeMap::new()
        } else {
            BTreeMap::clone(&self.settings.read())
        };
        for &(name, value) in changes {
            match value {
                Some(value) => next.insert(name.to_string(), value.to_string()),
                None => next.remove(name),
            };
        }
        if next.len() > MAX_SETTINGS {
            return Err(format!("a broker keeps at most {MAX_SETTINGS} dynamic settings"));
        }
        if validate_only || next == **self.settings.read() {
            return Ok(());
        }
        let stored = Stored {
            version: VERSION,
            settings: next,
        };
        if let Err(e) = meta::write(&StdFs, &self.path, &stored) {
            // A failure after the file's rename leaves the new settings in it.
            if let Ok(Some(on_disk)) = meta::read::<Stored>(&self.path) {
                *self.settings.write() = Arc::new(on_disk.settings);
            }
            return Err(e.to_string());
        }
        *self.settings.write() = Arc::new(stored.settings);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_parsed_and_checked() {
        assert_eq!(
            listener("PLAINTEXT://example.com:9092"),
            Ok(("example.com".to_string(), 9092))
        );
        assert_eq!(listener("PLAINTEXT://[::1]:9093"), Ok(("::1".to_string(), 9093)));
        for bad in [
            "example.com:9092",
            "SSL://h:1",
            "PLAINTEXT://h",
            "PLAINTEXT://h:0",
            "PLAINTEXT://:1",
            "PLAINTEXT://a:1,PLAINTEXT://b:2",
        ] {
            assert!(listener(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_are_altered_whole_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let configured = ("127.0.0.1".to_string(), 9092);
        let configs = BrokerConfigs::open(dir.path()).unwrap();
        let moved = (ADVERTISED_LISTENERS, Some("PLAINTEXT://kafka.example:19092"));
        // A change with one refused setting changes nothing.
        assert!(
            configs
                .alter(&[moved, ("log.retention.ms", Some("1"))], false, false)
                .is_err()
        );
        assert_eq!(configs.advertised(&configured), configured);
        // Validated only: nothing changes.
        configs.alter(&[moved], false, true).unwrap();
        assert_eq!(configs.advertised(&configured), configured);
        configs
            .alter(
                &[moved, ("sasl.kerberos.min.time.before.relogin", Some("58000"))],
                false,
                false,
            )
            .unwrap();
        assert_eq!(
            configs.advertised(&configured),
            ("kafka.example".to_string(), 19092)
        );
        // Kept across a reopening; replaced whole by AlterConfigs.
        let configs = BrokerConfigs::open(dir.path()).unwrap();
        assert_eq!(configs.settings().len(), 2);
        configs
            .alter(&[("ssl.protocol", Some("TLSv1.3"))], true, false)
            .unwrap();
        assert_eq!(configs.advertised(&configured), configured);
        assert_eq!(configs.settings().keys().collect::<Vec<_>>(), ["ssl.protocol"]);
        // Secrets are not kept.
        assert!(
            configs
                .alter(&[("ssl.keystore.password", Some("x"))], false, false)
                .is_err()
        );
        assert!(
            configs
                .alter(&[("sasl.jaas.config", Some("x"))], false, false)
                .is_err()
        );
        configs.alter(&[("ssl.protocol", None)], false, false).unwrap();
        assert!(BrokerConfigs::open(dir.path()).unwrap().settings().is_empty());
    }
}
