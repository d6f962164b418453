//! The record of IPVS services lbctl created (IPVS itself has no owner tag).

use std::{
    collections::BTreeSet,
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
};

use super::{IpvsError, ServiceKey};

/// File format version.
const VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    protocol: u16,
    addr: IpAddr,
    port: u16,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct File {
    version: u32,
    services: Vec<Entry>,
}

/// The services lbctl owns, mirrored to a JSON file on every change.
#[derive(Debug)]
pub struct OwnedRecord {
    path: PathBuf,
    services: BTreeSet<ServiceKey>,
}

impl OwnedRecord {
    /// Loads the record at `path`; a missing file is an empty record.
    ///
    /// # Errors
    /// An unreadable or malformed file.
    pub fn load(path: PathBuf) -> Result<Self, IpvsError> {
        let err = |source| IpvsError::Record {
            path: path.clone(),
            source,
        };
        let services = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: File = serde_json::from_slice(&bytes)
                    .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
                if f.version != VERSION {
                    return Err(err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("version {} (this lbctl writes {VERSION})", f.version),
                    )));
                }
                f.services
                    .into_iter()
                    .map(|e| ServiceKey::Addr {
                        protocol: e.protocol,
                        addr: e.addr,
                        port: e.port,
                    })
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(err(e)),
        };
        Ok(Self { path, services })
    }

    /// Where the record lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The owned services.
    pub fn services(&self) -> &BTreeSet<ServiceKey> {
        &self.services
    }

    /// Number of owned services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// No owned service.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Owned?
    pub fn contains(&self, key: &ServiceKey) -> bool {
        self.services.contains(key)
    }

    /// Records `key` and persists the record.
    ///
    /// # Errors
    /// File I/O.
    pub fn insert(&mut self, key: ServiceKey) -> Result<(), IpvsError> {
        if self.services.insert(key) {
            self.save()?;
        }
        Ok(())
    }

    /// Forgets `keys` and persists the record.
    ///
    /// # Errors
    /// File I/O.
    pub fn remove_all(&mut self, keys: &[ServiceKey]) -> Result<(), IpvsError> {
        let mut changed = false;
        for k in keys {
            changed |= self.services.remove(k);
        }
        if changed {
            self.save()?;
        }
        Ok(())
    }

    /// Writes the record atomically: temporary file, fsync, rename.
    fn save(&self) -> Result<(), IpvsError> {
        let err = |source| IpvsError::Record {
            path: self.path.clone(),
            source,
        };
        let file = File {
            version: VERSION,
            services: self
                .services
                .iter()
                .filter_map(|k| match *k {
                    ServiceKey::Addr {
                        protocol,
                        addr,
                        port,
                    } => Some(Entry {
                        protocol,
                        addr,
                        port,
                    }),
                    ServiceKey::Fwmark { .. } => None,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        Ok(())
    }
}
