//! Image bytes on disk: `<root>/<tenant id>/<asset id>`, written to a temporary file and renamed
//! into place so a crash never leaves a partial blob under a real name.

use crate::error::{Result, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

/// Creates `dir` (and parents) readable only by the user.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let err = |source| StoreError::Blob {
        path: dir.display().to_string(),
        source,
    };
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(err)
}

impl BlobStore {
    pub(crate) fn new(root: PathBuf) -> Result<Self> {
        create_private_dir(&root)?;
        Ok(Self { root })
    }

    fn path(&self, tenant: &str, id: &str) -> PathBuf {
        // Both parts are ids we generated (checked by the callers' queries), never user paths.
        debug_assert!(!tenant.contains(['/', '.']) && !id.contains(['/', '.']));
        self.root.join(tenant).join(id)
    }

    pub(crate) fn put(&self, tenant: &str, id: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(tenant, id);
        let dir = path.parent().expect("blob paths have a parent");
        create_private_dir(dir)?;
        let err = |source| StoreError::Blob {
            path: path.display().to_string(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(err)?;
        tmp.write_all(bytes).map_err(err)?;
        tmp.as_file().sync_data().map_err(err)?;
        tmp.persist(&path).map_err(|e| err(e.error))?;
        Ok(())
    }

    pub(crate) fn get(&self, tenant: &str, id: &str) -> Result<Vec<u8>> {
        let path = self.path(tenant, id);
        std::fs::read(&path).map_err(|source| StoreError::Blob {
            path: path.display().to_string(),
            source,
        })
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        let err = |source| StoreError::Blob {
            path: dir.display().to_string(),
            source,
        };
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(err(e)),
        };
        for e in entries {
            let name = e.map_err(err)?.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The tenants that have blobs.
    pub(crate) fn tenants(&self) -> Result<Vec<String>> {
        self.list(&self.root)
    }

    /// The names of a tenant's blobs (temporary files left out).
    pub(crate) fn names(&self, tenant: &str) -> Result<Vec<String>> {
        self.list(&self.root.join(tenant))
    }

    /// Deletes every blob of a tenant and its folder; returns how many files there were.
    pub(crate) fn delete_tenant(&self, tenant: &str) -> Result<u64> {
        debug_assert!(!tenant.contains(['/', '.']));
        let dir = self.root.join(tenant);
        let files = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(StoreError::Blob {
                    path: dir.display().to_string(),
                    source,
                })
            }
        };
        std::fs::remove_dir_all(&dir).map_err(|source| StoreError::Blob {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(files)
    }

    pub(crate) fn delete(&self, tenant: &str, id: &str) -> Result<()> {
        let path = self.path(tenant, id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Blob {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}
