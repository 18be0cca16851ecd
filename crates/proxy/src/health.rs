//! Active HTTP health checks (`tandem.dev/health-check-*`): one task per checked backend, on the
//! config source's runtime, off the data path. Every interval each serving endpoint gets
//! `GET <path>` on a fresh connection; `2xx`/`3xx` within the timeout passes. The results move
//! endpoints out of and back into rotation ([`Backend::record_probe`]); the pick never leaves a
//! backend without endpoints (when all fail, all are used).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_sync::annotations::balance::HealthCheck;
use k8s_sync::{BackendKey, Route, RoutingConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::AbortHandle;

use crate::backend::{Backend, BackendRegistry};

/// The running checkers, by backend.
#[derive(Debug, Default)]
pub struct HealthCheckers {
    running: HashMap<BackendKey, Running>,
}

#[derive(Debug)]
struct Running {
    backend: Arc<Backend>,
    check: HealthCheck,
    task: AbortHandle,
}

impl Running {
    fn stop(self) {
        self.task.abort();
        self.backend.clear_health();
    }
}

/// The health check of every backend some route asks one for; when routes to one backend ask
/// for different checks, the first route's (in host order) is used.
pub fn wanted(config: &RoutingConfig) -> Vec<(BackendKey, HealthCheck)> {
    let mut by_host = HealthByHost::default();
    by_host.rebuild(config);
    by_host.wanted()
}

/// Health checks the routes ask for, per host key in host order (exact hosts, wildcards, then
/// the host-less rules), kept up to date host by host: most hosts ask for none.
#[derive(Debug, Default)]
pub struct HealthByHost(BTreeMap<(u8, String), Vec<(BackendKey, HealthCheck)>>);

impl HealthByHost {
    fn order(host_key: &str) -> (u8, String) {
        match host_key {
            "" => (2, String::new()),
            h => match h.strip_prefix("*.") {
                Some(suffix) => (1, suffix.to_owned()),
                None => (0, h.to_owned()),
            },
        }
    }

    fn of(routes: &[Route]) -> Vec<(BackendKey, HealthCheck)> {
        let mut out: Vec<(BackendKey, HealthCheck)> = Vec::new();
        for r in routes {
            let check = r
                .policy
                .as_deref()
                .and_then(|p| p.balance.as_ref())
                .and_then(|b| b.health_check.as_ref());
            if let Some(check) = check
                && !out.iter().any(|(k, _)| *k == r.backend)
            {
                out.push((r.backend.clone(), check.clone()));
            }
        }
        out
    }

    fn put(&mut self, host_key: &str, routes: Option<&Arc<Vec<Route>>>) {
        let checks = routes.map(|r| Self::of(r)).unwrap_or_default();
        if checks.is_empty() {
            self.0.remove(&Self::order(host_key));
        } else {
            self.0.insert(Self::order(host_key), checks);
        }
    }

    /// Looks at every host.
    pub fn rebuild(&mut self, config: &RoutingConfig) {
        self.0.clear();
        for (h, r) in config.exact_hosts.iter() {
            self.put(h, Some(r));
        }
        for (suffix, r) in config.wildcard_hosts.iter() {
            self.put(&format!("*.{suffix}"), Some(r));
        }
        self.put("", Some(&config.hostless));
    }

    /// Looks at the given host keys again (`""`: the host-less rules).
    pub fn update<'a>(
        &mut self,
        config: &RoutingConfig,
        hosts: impl IntoIterator<Item = &'a String>,
    ) {
        for h in hosts {
            let routes = match h.as_str() {
                "" => Some(&config.hostless),
                h => match h.strip_prefix("*.") {
                    Some(suffix) => config.wildcard_hosts.get(suffix),
                    None => config.exact_hosts.get(h),
                },
            };
            self.put(h, routes);
        }
    }

    /// One check per backend, the first host's in host order.
    pub fn wanted(&self) -> Vec<(BackendKey, HealthCheck)> {
        let mut out: Vec<(BackendKey, HealthCheck)> = Vec::new();
        for (key, check) in self.0.values().flatten() {
            if !out.iter().any(|(k, _)| k == key) {
                out.push((key.clone(), check.clone()));
            }
        }
        out
    }
}

impl HealthCheckers {
    /// Starts, restarts and stops checkers so that exactly the `wanted` backends are checked.
    /// Needs a tokio runtime (the config source's); without one nothing is started.
    pub fn sync(&mut self, wanted: Vec<(BackendKey, HealthCheck)>, backends: &BackendRegistry) {
        let rt = tokio::runtime::Handle::try_current().ok();
        let mut next = HashMap::new();
        for (key, check) in wanted {
            let Some(backend) = backends.get(&key) else {
                continue;
            };
            match self.running.remove(&key) {
                Some(r) if r.check == check && Arc::ptr_eq(&r.backend, backend) => {
                    next.insert(key, r);
                    continue;
                }
                Some(r) => r.stop(),
                None => {}
            }
            let Some(rt) = &rt else {
                tracing::warn!(backend = &*backend.label, "no runtime for health checks");
                continue;
            };
            tracing::info!(backend = &*backend.label, path = %check.path, interval_ms = check.interval.as_millis() as u64, "health checks started");
            let task = rt.spawn(run(backend.clone(), check.clone())).abort_handle();
            next.insert(
                key,
                Running {
                    backend: backend.clone(),
                    check,
                    task,
                },
            );
        }
        for (_, r) in self.running.drain() {
            tracing::info!(backend = &*r.backend.label, "health checks stopped");
            r.stop();
        }
        self.running = next;
    }
}

impl Drop for HealthCheckers {
    fn drop(&mut self) {
        for (_, r) in self.running.drain() {
            r.task.abort();
        }
    }
}

async fn run(backend: Arc<Backend>, check: HealthCheck) {
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let path: Arc<str> = check.path.as_str().into();
    loop {
        tick.tick().await;
        let endpoints = backend.serving_endpoints();
        let probes: Vec<_> = endpoints
            .iter()
            .map(|e| tokio::spawn(probe(e.addr, path.clone(), check.timeout)))
            .collect();
        for (e, p) in endpoints.iter().zip(probes) {
            let ok = p.await.unwrap_or(false);
            backend.record_probe(e, ok, &check);
        }
    }
}

/// `GET path` on a new connection to `addr`: whether a `2xx`/`3xx` status line came back within
/// `timeout`.
pub async fn probe(addr: SocketAddr, path: Arc<str>, timeout: Duration) -> bool {
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tandem-health-check\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        let mut n = 0;
        while n < head.len() {
            let got = conn.read(&mut head[n..]).await.ok()?;
            if got == 0 {
                break;
            }
            n += got;
        }
        status_ok(&head[..n])
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Whether a response head starts with an `HTTP/1.x` status line of `2xx` or `3xx`.
fn status_ok(head: &[u8]) -> Option<bool> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(matches!(code[0], b'2' | b'3'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_sync::{BackendProtocol, EndpointSet, ResolvedBackend, ServicePortRef};
    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(status_ok(b"HTTP/1.1 200 "), Some(true));
        assert_eq!(status_ok(b"HTTP/1.0 302 "), Some(true));
        assert_eq!(status_ok(b"HTTP/1.1 503 "), Some(false));
        assert_eq!(status_ok(b"HTTP/1.1 404 "), Some(false));
        assert_eq!(status_ok(b"HTTP/1.1 20"), None);
        assert_eq!(status_ok(b"SSH-2.0-Open"), None);
    }

    /// A server answering each connection with `status`.
    async fn server(status: u16) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c
                    .write_all(
                        format!("HTTP/1.1 {status} x\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn probes_and_checker() {
        let ok = server(204).await;
        let bad = server(500).await;
        let t = Duration::from_secs(2);
        assert!(probe(ok, "/h".into(), t).await);
        assert!(!probe(bad, "/h".into(), t).await);
        // Nobody listening.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!probe(closed, "/h".into(), t).await);

        let key = BackendKey {
            namespace: "ns".into(),
            service: "svc".into(),
            port: ServicePortRef::Number(80),
        };
        let mut set = EndpointSet::default();
        let mut addrs = vec![ok, bad];
        addrs.sort();
        set.0.insert(
            key.clone(),
            ResolvedBackend {
                addrs,
                protocol: BackendProtocol::Http1,
                draining: vec![],
                weights: vec![],
            },
        );
        let mut reg = BackendRegistry::default();
        reg.sync(&set);
        let check = HealthCheck {
            path: "/h".into(),
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(500),
            healthy_threshold: 1,
            unhealthy_threshold: 2,
        };
        let mut checkers = HealthCheckers::default();
        checkers.sync(vec![(key.clone(), check.clone())], &reg);
        let backend = reg.get(&key).unwrap().clone();
        let unhealthy = || {
            backend
                .serving_endpoints()
                .iter()
                .filter(|e| e.is_unhealthy())
                .map(|e| e.addr)
                .collect::<Vec<_>>()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while unhealthy().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(unhealthy(), vec![bad]);
        for _ in 0..10 {
            assert_eq!(backend.pick(&[]), crate::Pick::Endpoint(ok));
        }
        // Checks removed: everything back in rotation.
        checkers.sync(vec![], &reg);
        assert!(unhealthy().is_empty());
    }
}
