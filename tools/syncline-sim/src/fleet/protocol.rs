//! The raw device protocol the fleet speaks: the frames it sends, Hello with a password or a
//! token, the partition's head, and how server errors read in reports.

use std::net::IpAddr;

use anyhow::{Context, bail};
use syncline_client_sim::{ConnectOptions, Connection, Incoming};
use syncline_proto::{
    PROTOCOL_VERSION,
    v1::{
        Ack, ClientFrame, DeviceInfo, ErrorCode, Hello, Login, ServerFrame, Subscribe, SyncStatus, Unsubscribe,
        Welcome, client_frame, hello, server_frame,
    },
};

/// Returns the frame of a Hello with `credentials`.
fn hello_frame(credentials: hello::Credentials) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            credentials: Some(credentials),
            client_id: String::new(),
            device: Some(DeviceInfo {
                platform: "syncline-sim".into(),
                app_version: env!("CARGO_PKG_VERSION").into(),
                model: "load scenario".into(),
            }),
        })),
    }
}

/// Returns the frame of a Subscribe to `source`/`key` from `cursor`.
pub(crate) fn subscribe_frame(source: &str, key: &str, cursor: u64, page_size: u32, window: u32) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Subscribe(Subscribe {
            source: source.to_owned(),
            key: key.to_owned(),
            cursor,
            page_size,
            window,
        })),
    }
}

/// Returns the frame of an Ack of `cursor` (and catch-up page `page`, 0 for live pushes).
pub(crate) fn ack_frame(source: &str, key: &str, cursor: u64, page: u64) -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Ack(Ack { source: source.to_owned(), key: key.to_owned(), cursor, page })),
    }
}

/// Describes a fatal server frame or close for error messages.
pub(crate) fn describe_error(error: &syncline_proto::v1::Error) -> String {
    describe_code(error.code, &error.message)
}

/// Returns "CODE_NAME: message" for an `ErrorCode` value (its number if unknown).
pub(crate) fn describe_code(code: i32, message: &str) -> String {
    let code = ErrorCode::try_from(code).map_or_else(|_| code.to_string(), |code| code.as_str_name().into());
    format!("{code}: {message}")
}

/// How the server answered a Hello.
pub(crate) enum HelloAnswer {
    /// The session started.
    Welcome(Box<(Connection, Welcome)>),
    /// A fatal Error (then, usually, a close).
    Refused(syncline_proto::v1::Error),
    /// The server closed the connection without a Welcome or an Error.
    Closed { code: u16, reason: String },
}

/// Opens a connection (from `local`, if given), sends a Hello with `credentials` and returns
/// the server's answer; fails only when the connection does.
pub(crate) async fn hello(
    url: &str,
    local: Option<IpAddr>,
    credentials: hello::Credentials,
) -> anyhow::Result<HelloAnswer> {
    let options = ConnectOptions { local_addr: local, ..ConnectOptions::default() };
    let mut connection = Connection::connect(url, &options).await?;
    connection.send(&hello_frame(credentials)).await?;
    loop {
        match connection.recv().await? {
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Welcome(welcome)) }) => {
                return Ok(HelloAnswer::Welcome(Box::new((connection, welcome))));
            }
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Error(error)) }) => {
                return Ok(HelloAnswer::Refused(error));
            }
            Incoming::Frame(_) => {}
            Incoming::Closed { code, reason } => return Ok(HelloAnswer::Closed { code, reason }),
        }
    }
}

/// Opens a connection (from `local`, if given) and starts a session with `credentials`;
/// returns the connection and the Welcome.
pub(crate) async fn open_session(
    url: &str,
    local: Option<IpAddr>,
    credentials: hello::Credentials,
) -> anyhow::Result<(Connection, Welcome)> {
    match hello(url, local, credentials).await? {
        HelloAnswer::Welcome(session) => Ok(*session),
        HelloAnswer::Refused(error) => bail!("Hello refused: {}", describe_error(&error)),
        HelloAnswer::Closed { code, reason } => bail!("closed by the server before Welcome: {code} {reason}"),
    }
}

/// Logs in with a password (argon2 on the server: slow, so once per run).
pub(crate) async fn login(url: &str, user: &str, password: &str) -> anyhow::Result<(Connection, Welcome)> {
    let credentials = hello::Credentials::Login(Login { username: user.to_owned(), password: password.to_owned() });
    open_session(url, None, credentials).await.context("logging in")
}

/// Starts a session with a session token from an earlier Welcome.
pub(crate) async fn resume(url: &str, local: Option<IpAddr>, token: &str) -> anyhow::Result<(Connection, Welcome)> {
    open_session(url, local, hello::Credentials::SessionToken(token.to_owned())).await
}

/// Returns the partition's current head sequence: subscribes from cursor 0 with one-record
/// pages and a window of one, reads the first snapshot page (which is at the head), and
/// unsubscribes. Costs the server one page, not a full sync.
pub(crate) async fn partition_head(connection: &mut Connection, source: &str, key: &str) -> anyhow::Result<u64> {
    connection.send(&subscribe_frame(source, key, 0, 1, 1)).await?;
    let head = loop {
        match connection.recv().await? {
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Changes(changes)) }) => break changes.to,
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::Error(error)) }) => {
                bail!("subscribing to {source} refused: {}", describe_error(&error))
            }
            Incoming::Frame(ServerFrame { msg: Some(server_frame::Msg::SyncState(state)) })
                if state.status == SyncStatus::Error as i32 =>
            {
                bail!("subscribing to {source} failed: {:?}", state.error)
            }
            Incoming::Frame(_) => {}
            Incoming::Closed { code, reason } => bail!("closed by the server: {code} {reason}"),
        }
    };
    let unsubscribe = Unsubscribe { source: source.to_owned(), key: key.to_owned() };
    connection.send(&ClientFrame { msg: Some(client_frame::Msg::Unsubscribe(unsubscribe)) }).await?;
    Ok(head)
}
