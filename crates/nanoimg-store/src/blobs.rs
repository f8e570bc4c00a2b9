//! Image bytes, always ciphertext by the time they get here (`keys_at_rest` seals them), in one
//! of two places:
//! - files on disk, `<root>/<tenant id>/<name>`, written to a temporary file and renamed into
//!   place so a crash never leaves a partial blob under a real name (the default);
//! - an S3-compatible object store (`s3://bucket/prefix`), objects `<prefix>/<tenant id>/<name>`,
//!   for several processes on several machines. A PUT is atomic, so the same holds.

use crate::error::{Result, StoreError};
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct BlobStore {
    place: Place,
}

#[derive(Clone, Debug)]
enum Place {
    Dir(PathBuf),
    Object {
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
        /// `s3://bucket`, for messages.
        url: String,
    },
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

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Blob {
        path: path.display().to_string(),
        source,
    }
}

fn stopped(e: tokio::task::JoinError) -> StoreError {
    StoreError::Invalid(format!("blob worker stopped: {e}"))
}

/// Runs file I/O off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(stopped)?
}

impl BlobStore {
    /// Blobs in a directory on disk (made private if missing).
    pub(crate) fn new(root: PathBuf) -> Result<Self> {
        create_private_dir(&root)?;
        Ok(Self {
            place: Place::Dir(root),
        })
    }

    /// Blobs in an S3 bucket: `url` is `s3://BUCKET[/PREFIX]`. The endpoint, region and
    /// credentials come from the usual `AWS_*` environment variables (`AWS_ENDPOINT`,
    /// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP` for a
    /// plain-HTTP endpoint on a private network).
    pub(crate) fn s3(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            StoreError::Invalid(format!("blob store URL {url:?}: expected s3://BUCKET[/PREFIX]"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Invalid(format!(
                "blob store URL {url:?} names no bucket"
            )));
        }
        let prefix = ObjectPath::parse(prefix.trim_matches('/'))
            .map_err(|e| StoreError::Invalid(format!("blob store URL {url:?}: {e}")))?;
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|source| StoreError::Object {
                path: url.to_string(),
                source,
            })?;
        Ok(Self {
            place: Place::Object {
                store: Arc::new(store),
                prefix,
                url: format!("s3://{bucket}"),
            },
        })
    }

    /// A blob store from a URL: `s3://…`, or a directory path (`file://` optional).
    pub(crate) fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("s3://") {
            Self::s3(url)
        } else if let Some(dir) = url.strip_prefix("file://") {
            Self::new(PathBuf::from(dir))
        } else if url.contains("://") {
            Err(StoreError::Invalid(format!(
                "unsupported blob store URL {url:?}: use a directory or s3://BUCKET[/PREFIX]"
            )))
        } else {
            Self::new(PathBuf::from(url))
        }
    }

    fn object_err(url: &str, at: &ObjectPath) -> impl Fn(object_store::Error) -> StoreError {
        let path = format!("{url}/{at}");
        move |source| StoreError::Object {
            path: path.clone(),
            source,
        }
    }

    fn object_path(prefix: &ObjectPath, parts: &[&str]) -> ObjectPath {
        let mut p = prefix.clone();
        for part in parts {
            p = p.child(*part);
        }
        p
    }

    fn check(tenant: &str, id: &str) {
        // Both parts are ids we generated (checked by the callers' queries), never user paths.
        debug_assert!(!tenant.contains(['/', '.']) && !id.contains(['/', '.']));
    }

    pub(crate) async fn put(&self, tenant: &str, id: &str, bytes: Vec<u8>) -> Result<()> {
        Self::check(tenant, id);
        match &self.place {
            Place::Dir(root) => {
                let path = root.join(tenant).join(id);
                blocking(move || {
                    let dir = path.parent().expect("blob paths have a parent");
                    create_private_dir(dir)?;
                    let err = io_err(&path);
                    let mut tmp = tempfile::Builder::new()
                        .prefix(".tmp-")
                        .tempfile_in(dir)
                        .map_err(&err)?;
                    tmp.write_all(&bytes).map_err(&err)?;
                    tmp.as_file().sync_data().map_err(&err)?;
                    tmp.persist(&path).map_err(|e| err(e.error))?;
                    Ok(())
                })
                .await
            }
            Place::Object { store, prefix, url } => {
                let at = Self::object_path(prefix, &[tenant, id]);
                store
                    .put(&at, PutPayload::from(bytes))
                    .await
                    .map_err(Self::object_err(url, &at))?;
                Ok(())
            }
        }
    }

    pub(crate) async fn get(&self, tenant: &str, id: &str) -> Result<Vec<u8>> {
        Self::check(tenant, id);
        match &self.place {
            Place::Dir(root) => {
                let path = root.join(tenant).join(id);
                blocking(move || std::fs::read(&path).map_err(io_err(&path))).await
            }
            Place::Object { store, prefix, url } => {
                let at = Self::object_path(prefix, &[tenant, id]);
                let err = Self::object_err(url, &at);
                let got = store.get(&at).await.map_err(&err)?;
                Ok(got.bytes().await.map_err(&err)?.to_vec())
            }
        }
    }

    /// The names directly under `parts` (file names, or object names up to the next `/`),
    /// sorted, temporary files left out.
    async fn list(&self, parts: &[&str]) -> Result<Vec<String>> {
        let mut out = match &self.place {
            Place::Dir(root) => {
                let dir = parts.iter().fold(root.clone(), |d, p| d.join(p));
                blocking(move || {
                    let err = io_err(&dir);
                    let entries = match std::fs::read_dir(&dir) {
                        Ok(e) => e,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                        Err(e) => return Err(err(e)),
                    };
                    let mut out = Vec::new();
                    for e in entries {
                        out.push(e.map_err(&err)?.file_name().to_string_lossy().into_owned());
                    }
                    Ok(out)
                })
                .await?
            }
            Place::Object { store, prefix, url } => {
                let at = Self::object_path(prefix, parts);
                let listed = store
                    .list_with_delimiter(Some(&at))
                    .await
                    .map_err(Self::object_err(url, &at))?;
                let names = listed.objects.iter().map(|o| &o.location);
                names
                    .chain(&listed.common_prefixes)
                    .filter_map(|p| p.filename().map(str::to_string))
                    .collect()
            }
        };
        out.retain(|n| !n.starts_with('.'));
        out.sort();
        Ok(out)
    }

    /// The tenants that have blobs.
    pub(crate) async fn tenants(&self) -> Result<Vec<String>> {
        self.list(&[]).await
    }

    /// The names of a tenant's blobs (temporary files left out).
    pub(crate) async fn names(&self, tenant: &str) -> Result<Vec<String>> {
        self.list(&[tenant]).await
    }

    /// Deletes every blob of a tenant (and its folder); returns how many there were.
    pub(crate) async fn delete_tenant(&self, tenant: &str) -> Result<u64> {
        debug_assert!(!tenant.contains(['/', '.']));
        match &self.place {
            Place::Dir(root) => {
                let dir = root.join(tenant);
                blocking(move || {
                    let err = io_err(&dir);
                    let files = match std::fs::read_dir(&dir) {
                        Ok(entries) => entries.count() as u64,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                        Err(e) => return Err(err(e)),
                    };
                    std::fs::remove_dir_all(&dir).map_err(&err)?;
                    Ok(files)
                })
                .await
            }
            Place::Object { store, prefix, url } => {
                let at = Self::object_path(prefix, &[tenant]);
                let err = Self::object_err(url, &at);
                let objects: Vec<_> = store
                    .list(Some(&at))
                    .map_ok(|o| o.location)
                    .try_collect()
                    .await
                    .map_err(&err)?;
                for o in &objects {
                    store.delete(o).await.map_err(&err)?;
                }
                Ok(objects.len() as u64)
            }
        }
    }

    pub(crate) async fn delete(&self, tenant: &str, id: &str) -> Result<()> {
        Self::check(tenant, id);
        match &self.place {
            Place::Dir(root) => {
                let path = root.join(tenant).join(id);
                blocking(move || match std::fs::remove_file(&path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_err(&path)(e)),
                })
                .await
            }
            Place::Object { store, prefix, url } => {
                let at = Self::object_path(prefix, &[tenant, id]);
                match store.delete(&at).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(Self::object_err(url, &at)(e)),
                }
            }
        }
    }
}
