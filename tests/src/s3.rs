//! An S3-compatible server for tests, in this process: `s3s` (the S3 protocol, request
//! signatures checked) over `s3s-fs` (objects as files in a temporary directory), served
//! over real HTTP on 127.0.0.1 port 0. Nothing is mocked: the server under test talks to it
//! with the same client as to AWS S3 or MinIO, and tests read the bucket through the S3 API.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use syncline_server::config::BlobS3Section;
use tokio_util::sync::CancellationToken;

/// The access key id the test server accepts.
pub const ACCESS_KEY_ID: &str = "syncline-test";

/// The secret access key the test server accepts.
pub const SECRET_ACCESS_KEY: &str = "syncline-test-secret-key";

/// The bucket every test server has.
pub const BUCKET: &str = "syncline-test";

/// An S3-compatible server on loopback, stopped when dropped.
pub struct S3Server {
    pub addr: SocketAddr,
    /// The directory holding the buckets (one sub-directory each).
    pub root: tempfile::TempDir,
    stop: CancellationToken,
}

impl S3Server {
    /// Starts a server with bucket [`BUCKET`], accepting [`ACCESS_KEY_ID`] and
    /// [`SECRET_ACCESS_KEY`].
    pub async fn start() -> Self {
        let root = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir(root.path().join(BUCKET)).expect("bucket directory");
        let filesystem = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs over the directory");
        let service = {
            let mut builder = S3ServiceBuilder::new(filesystem);
            builder.set_auth(SimpleAuth::from_single(ACCESS_KEY_ID, SECRET_ACCESS_KEY));
            builder.build()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the S3 server");
        let addr = listener.local_addr().expect("S3 server address");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let socket = tokio::select! {
                    () = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => continue,
                    },
                };
                let connection = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = stopped.cancelled() => {}
                        _ = connection => {}
                    }
                });
            }
        });
        Self { addr, root, stop }
    }

    /// Returns the endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns a `[blob.s3]` section for this server, with key prefix `prefix`.
    pub fn section(&self, prefix: &str) -> BlobS3Section {
        BlobS3Section {
            bucket: Some(BUCKET.to_owned()),
            endpoint: Some(self.endpoint()),
            region: None,
            access_key_id: Some(ACCESS_KEY_ID.to_owned()),
            secret_access_key: Some(SECRET_ACCESS_KEY.to_owned()),
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            allow_http: true,
        }
    }

    /// Returns a client of the bucket, to read what the server under test stored.
    pub fn client(&self) -> Arc<dyn ObjectStore> {
        let store = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_access_key_id(ACCESS_KEY_ID)
            .with_secret_access_key(SECRET_ACCESS_KEY)
            .build()
            .expect("S3 client");
        Arc::new(store)
    }

    /// Lists the keys under `prefix` in the bucket, through the S3 API.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        use futures_util::StreamExt as _;
        let client = self.client();
        let prefix = ObjectPath::from(prefix);
        let mut listing = client.list(Some(&prefix));
        let mut keys = Vec::new();
        while let Some(meta) = listing.next().await {
            keys.push(meta.expect("list the bucket").location.to_string());
        }
        keys.sort();
        keys
    }

    /// Returns the bytes of object `key`.
    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        match self.client().get(&ObjectPath::from(key)).await {
            Ok(result) => Some(result.bytes().await.expect("read the object").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(error) => panic!("cannot read {key}: {error}"),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
