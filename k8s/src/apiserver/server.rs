//! HTTP/1.1 over TLS: bearer-token checks, the router's answers as bytes, watches as streams
//! that stay open until their timeout or until the client goes; and a small HTTPS client
//! (`fetch`) to check a server answers.
use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::{
    body::{Frame, Incoming},
    header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE},
    service::service_fn,
    Response,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};

use super::{
    credentials::Credentials,
    objects::ObjectSet,
    route::{self, Reply, Request, Route},
    ApiError,
};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

type Body = BoxBody<Bytes, Infallible>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls(e: impl std::fmt::Display) -> ApiError {
    ApiError::Tls(e.to_string())
}

/// A read-only Kubernetes API over a fixed [`ObjectSet`].
pub struct ApiServer {
    set: Arc<ObjectSet>,
    token: Arc<str>,
    tls: Arc<rustls::ServerConfig>,
}

impl ApiServer {
    pub fn new(set: ObjectSet, creds: &Credentials) -> Result<ApiServer, ApiError> {
        set.check_namespaces()?;
        let certs = CertificateDer::pem_slice_iter(creds.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(tls)?;
        let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes()).map_err(tls)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ApiServer {
            set: Arc::new(set),
            token: creds.token.as_str().into(),
            tls: Arc::new(config),
        })
    }

    /// Serves on `listener` until `shutdown` completes; open connections (watches) are
    /// closed then.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ApiError> {
        let server = listener.local_addr()?.to_string();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let shared = Arc::new(Shared {
            set: self.set,
            token: self.token,
            server,
        });
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while conns.try_join_next().is_some() {}
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (acceptor, shared) = (acceptor.clone(), shared.clone());
            conns.spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::debug!("{peer}: TLS handshake: {e}"),
                    Err(_) => return tracing::debug!("{peer}: TLS handshake timed out"),
                };
                let svc = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(shared.handle(req)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!("{peer}: {e}");
                }
            });
        }
        conns.abort_all();
        Ok(())
    }
}

struct Shared {
    set: Arc<ObjectSet>,
    token: Arc<str>,
    server: String,
}

impl Shared {
    fn handle(&self, req: hyper::Request<Incoming>) -> Response<Body> {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        let request = Request {
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query().unwrap_or(""),
            accept: header(ACCEPT).unwrap_or(""),
        };
        // Health is open to anyone, as on a real API server; everything else needs the token.
        let open = route::route(request.path) == Some(Route::Health);
        let reply = if open || route::authorized(header(AUTHORIZATION), &self.token) {
            route::answer(&self.set, &self.server, &request)
        } else {
            route::unauthorized()
        };
        tracing::debug!(
            "{} {}?{} -> {}",
            request.method,
            request.path,
            request.query,
            reply.status()
        );
        respond(reply, req.method() == hyper::Method::HEAD)
    }
}

fn respond(reply: Reply, head: bool) -> Response<Body> {
    let (status, ctype, body) = match reply {
        Reply::Json { status, body } => (
            status,
            "application/json",
            serde_json::to_vec(&body).expect("JSON serialises"),
        ),
        Reply::Text { status, body } => (status, "text/plain; charset=utf-8", body.into_bytes()),
        Reply::Watch { events, timeout } => {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
            tokio::spawn(async move {
                for ev in events {
                    let mut line = serde_json::to_vec(&ev).expect("JSON serialises");
                    line.push(b'\n');
                    if tx.send(Ok(Frame::data(line.into()))).await.is_err() {
                        return;
                    }
                }
                // Nothing ever changes: hold the stream open until the timeout or the client
                // leaves, then end it (the client watches again).
                tokio::select! {
                    _ = tokio::time::sleep(timeout) => {}
                    _ = tx.closed() => {}
                }
            });
            let mut r = Response::new(
                StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed(),
            );
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return r;
        }
    };
    let body = if head { Vec::new() } else { body };
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// `GET path` from the server at `addr`, trusting only `ca_pem`, with `token` if given:
/// (status, body). For checks that a server is up (and for tests); a watch must carry a
/// `timeoutSeconds`, the body is read to its end.
pub async fn fetch(
    addr: SocketAddr,
    ca_pem: &str,
    token: Option<&str>,
    path: &str,
) -> Result<(u16, String), ApiError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(tls)?).map_err(tls)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ApiError::Http(e.to_string()))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, addr.to_string());
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| ApiError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ApiError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::Http(e.to_string()))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::ObjectMeta};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_over_tls_with_a_token_and_streams_watches() {
        let mut set = ObjectSet::new(3);
        set.add_namespace(Namespace {
            metadata: ObjectMeta {
                name: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let creds = Credentials::generate(&["127.0.0.1".parse().unwrap()], 1).unwrap();
        let server = ApiServer::new(set, &creds).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        let ca = &creds.ca_pem;
        let tok = Some(creds.token.as_str());

        let (code, body) = fetch(addr, ca, tok, "/api/v1/namespaces").await.unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"NamespaceList\""), "{body}");
        let (code, body) = fetch(addr, ca, None, "/api/v1/namespaces").await.unwrap();
        assert_eq!(code, 401);
        assert!(body.contains("\"Unauthorized\""), "{body}");
        let (code, _) = fetch(addr, ca, Some("wrong"), "/api").await.unwrap();
        assert_eq!(code, 401);
        let (code, body) = fetch(addr, ca, None, "/healthz").await.unwrap();
        assert_eq!((code, body.as_str()), (200, "ok"));

        let start = std::time::Instant::now();
        let (code, body) = fetch(
            addr,
            ca,
            tok,
            "/api/v1/namespaces?watch=true&timeoutSeconds=1",
        )
        .await
        .unwrap();
        assert_eq!(code, 200);
        let lines: Vec<serde_json::Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{body}");
        assert_eq!(lines[0]["type"], "ADDED");
        assert_eq!(lines[0]["object"]["metadata"]["name"], "default");
        assert!(
            start.elapsed() >= Duration::from_millis(900),
            "the watch stays open until its timeout"
        );

        let other = Credentials::generate(&["127.0.0.1".parse().unwrap()], 1).unwrap();
        assert!(
            fetch(addr, &other.ca_pem, tok, "/api").await.is_err(),
            "another lab's CA does not trust this server"
        );
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
