//! One WebSocket client: open a TCP connection (from a chosen 127.0.0.x source address when asked),
//! authenticate with a minted token, and complete Herald's handshake — or, against the nchan reference
//! server, subscribe to the user's channel and the broadcast channel on one socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use crate::limits::Failure;

pub type Ws = WebSocketStream<TcpStream>;

/// The server under test.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Target {
    /// Herald: `/ws/{user}?token=…`, `ready` frame, HTTP ingest at `/api/v1/events`.
    #[default]
    Herald,
    /// nginx + nchan (the reference peer, which stores nothing): `/sub/{user}` is a multiplexed websocket
    /// subscriber of the channels `{user}` and `broadcast` (subprotocol `ws+meta.nchan`, so every frame
    /// carries nchan's message id), publishing is `POST /pub/{user}` or `POST /pub/broadcast`.
    Nchan,
}

/// The nchan subprotocol that prefixes each message with its id (`id: …`) and content type.
pub const NCHAN_META_PROTOCOL: &str = "ws+meta.nchan";

/// Small buffers: the tool holds tens of thousands of mostly idle sockets.
pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(read_buffer).write_buffer_size(0)
}

/// Where and how to connect.
pub struct Dial<'a> {
    pub server: SocketAddr,
    /// `host:port` as written in the URL.
    pub host: &'a str,
    /// Bind to this 127.0.0.x before connecting.
    pub source: Option<Ipv4Addr>,
    pub read_buffer: usize,
    pub timeout: Duration,
    pub target: Target,
}

/// Connect and hand-shake, all within `timeout`.
pub async fn open(d: &Dial<'_>, user: &str, token: &str, since: Option<i64>) -> Result<Ws, Failure> {
    let fut = async {
        let stream = tcp(d.server, d.source).await?;
        let _ = stream.set_nodelay(true);
        let request = match d.target {
            Target::Herald => {
                let mut url = format!("ws://{}/ws/{user}?token={token}", d.host);
                if let Some(s) = since {
                    url.push_str(&format!("&since={s}"));
                }
                url.into_client_request().map_err(|_| Failure::Handshake)?
            }
            Target::Nchan => {
                let mut r =
                    format!("ws://{}/sub/{user}", d.host).into_client_request().map_err(|_| Failure::Handshake)?;
                r.headers_mut().insert("sec-websocket-protocol", NCHAN_META_PROTOCOL.parse().expect("ascii"));
                r
            }
        };
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config(d.read_buffer)))
            .await
            .map_err(|e| classify(&e))?;
        Ok(ws)
    };
    tokio::time::timeout(d.timeout, fut).await.unwrap_or(Err(Failure::Timeout))
}

async fn tcp(server: SocketAddr, source: Option<Ipv4Addr>) -> Result<TcpStream, Failure> {
    let io = |e: std::io::Error| Failure::from_io(&e);
    let sock = TcpSocket::new_v4().map_err(io)?;
    if let Some(ip) = source {
        // Pick the port at connect() time, per 4-tuple: bind() alone would reserve a port per socket
        // across all destinations and exhaust the range twice as fast.
        let one: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a correctly sized option value.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::new(ip.into(), 0)).map_err(io)?;
    }
    sock.connect(server).await.map_err(io)
}

fn classify(e: &WsError) -> Failure {
    match e {
        WsError::Io(io) => Failure::from_io(io),
        WsError::Http(_) => Failure::HttpStatus,
        WsError::ConnectionClosed | WsError::AlreadyClosed => Failure::Reset,
        _ => Failure::Handshake,
    }
}
