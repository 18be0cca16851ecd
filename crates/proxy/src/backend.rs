//! Backends (a Service port) with their endpoints and endpoint choice. Endpoints are swapped
//! per backend, without rebuilding the route table; each endpoint's balancing state (requests in
//! flight, latency EWMA, failures, ejection) lives in an [`EndpointState`] that an endpoint swap
//! carries over for every address still present.
//!
//! A route without balancing annotations picks round-robin over the ready endpoints with one
//! atomic increment (plus one load that tells whether any endpoint is out of rotation). When the
//! Service weighs its endpoints differently, each endpoint update builds a smooth weighted
//! round-robin schedule once, and a pick is still one increment: `schedule[cursor % len]`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use k8s_sync::annotations::balance::{
    AffinityMode, Algorithm, Balance, CookieAffinity, HealthCheck, Outlier,
};
use k8s_sync::{BackendKey, BackendProtocol, EndpointSet, ResolvedBackend};

use crate::balance::{self, Ring};
use crate::metrics::Metrics;

/// Cost of a failed connection in the latency EWMA: an endpoint refusing connections must not
/// look fast.
const CONNECT_FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Floor of an endpoint's EWMA cost, so that an endpoint without samples yet is still weighed
/// by its requests in flight.
const EWMA_FLOOR_NS: f64 = 100_000.0;
/// Random schedule positions tried when the scheduled endpoint cannot be used, before walking.
const REDRAWS: usize = 16;
/// Random keys drawn for a new `balanced` affinity session until one's owner on the ring can
/// take it (as many as ingress-nginx draws), before walking the ring from the last one.
const SESSION_DRAWS: usize = 20;

/// Nanoseconds since the first call, the clock of all balancing state (0 = never).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The balancing state of one endpoint of a backend. Atomics only: read and written by
/// requests on every worker without a lock.
#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    /// Stable id: names the endpoint on the hash ring and in affinity cookies.
    pub id: u64,
    in_flight: AtomicU32,
    /// Latency EWMA in nanoseconds (f64 bits) and when it was last updated (`now_ns`).
    ewma: AtomicU64,
    ewma_at: AtomicU64,
    /// 5xx responses / connect failures in a row.
    failures: AtomicU32,
    /// Ejected until this `now_ns` (0: in rotation).
    ejected_until: AtomicU64,
    /// Ejections in a row (the backoff doubles with each).
    ejections: AtomicU32,
    /// When the endpoint last came back from an ejection.
    restored_at: AtomicU64,
    /// Failed its active health checks.
    unhealthy: AtomicBool,
    /// Health-check results in a row: > 0 passes, < 0 failures (written by the checker only).
    probe_streak: AtomicI32,
}

impl EndpointState {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            id: balance::endpoint_id(addr),
            in_flight: AtomicU32::new(0),
            ewma: AtomicU64::new(0f64.to_bits()),
            ewma_at: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            restored_at: AtomicU64::new(0),
            unhealthy: AtomicBool::new(false),
            probe_streak: AtomicI32::new(0),
        }
    }

    /// Folds a latency sample into the EWMA (the first sample sets it).
    pub fn observe_latency(&self, latency: Duration) {
        let now = now_ns();
        let sample = latency.as_nanos() as f64;
        let at = self.ewma_at.swap(now, Ordering::Relaxed);
        let value = if at == 0 {
            sample
        } else {
            let old = f64::from_bits(self.ewma.load(Ordering::Relaxed));
            balance::ewma(
                old,
                Duration::from_nanos(now.saturating_sub(at)),
                Some(sample),
            )
        };
        self.ewma.store(value.to_bits(), Ordering::Relaxed);
    }

    /// The EWMA decayed to `now` (toward zero: an endpoint nobody picks is tried again).
    fn latency(&self, now: u64) -> f64 {
        let at = self.ewma_at.load(Ordering::Relaxed);
        let v = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        if at == 0 {
            return 0.0;
        }
        balance::ewma(v, Duration::from_nanos(now.saturating_sub(at)), None)
    }

    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    pub fn is_unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::Relaxed)
    }
}

/// Counts a request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlightOn(Arc<EndpointState>);

impl InFlightOn {
    fn new(state: Arc<EndpointState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for InFlightOn {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One snapshot of a backend's endpoints.
#[derive(Debug, Default)]
struct Endpoints {
    /// Ready endpoints, sorted: new requests go here.
    ready: Vec<SocketAddr>,
    /// The state of every serving endpoint: those of `ready` (same order), then the draining
    /// ones.
    states: Vec<Arc<EndpointState>>,
    /// The weight of each of `states`, or empty when all are equal.
    weights: Vec<u16>,
    /// When the ready endpoints' weights differ: the smooth weighted round-robin order of
    /// indices into `ready` (weight 0 never in it). `None`: plain round robin.
    schedule: Option<Box<[u32]>>,
    /// The consistent-hash ring over `states`: built by the publisher once the backend is
    /// hashed, else by the first hashed request.
    ring: OnceLock<Ring>,
}

impl Endpoints {
    fn ring(&self) -> &Ring {
        self.ring.get_or_init(|| {
            let ids: Vec<u64> = self.states.iter().map(|s| s.id).collect();
            if self.weights.is_empty() {
                Ring::build(&ids)
            } else {
                Ring::build_weighted(&ids, &self.weights)
            }
        })
    }

    /// The scheduled endpoint at `start` when `ok`. Else (an endpoint tried, ejected or
    /// unhealthy) a few draws at random positions of the schedule, so the others share its
    /// turns in proportion to their weights (walking on would hand them all to the endpoint
    /// after it), then the next `ok` one walking the schedule. `None`: none is `ok`.
    fn scheduled(
        &self,
        schedule: &[u32],
        start: usize,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let len = schedule.len();
        let first = schedule[start % len] as usize;
        if ok(first) {
            return Some(first);
        }
        let mut r = start as u64;
        for _ in 0..REDRAWS {
            r = balance::mix(r ^ 0x9e37_79b9_7f4a_7c15);
            let i = schedule[(r % len as u64) as usize] as usize;
            if ok(i) {
                return Some(i);
            }
        }
        self.order(start).find(|i| ok(*i))
    }

    /// Indices into `ready` in pick order from `start`: the schedule's (with repeats), or each
    /// ready endpoint once.
    fn order(&self, start: usize) -> impl Iterator<Item = usize> + Clone + '_ {
        let n = self.ready.len();
        let s = self.schedule.as_deref().unwrap_or(&[]);
        let (len, scheduled) = if s.is_empty() {
            (n, false)
        } else {
            (s.len(), true)
        };
        (0..len).map(move |i| {
            let k = start.wrapping_add(i) % len;
            if scheduled { s[k] as usize } else { k }
        })
    }
}

/// One Service port and the endpoints currently ready behind it.
#[derive(Debug)]
pub struct Backend {
    pub key: BackendKey,
    /// `namespace/service:port`, for logs.
    pub label: Arc<str>,
    /// Service name alone, for logs and metric labels.
    pub service: Arc<str>,
    endpoints: ArcSwap<Endpoints>,
    /// From the Service port's `appProtocol`; a Service edit changes it without a rebuild.
    protocol: AtomicBool,
    cursor: AtomicUsize,
    /// A route hashes over this backend: endpoint updates build the ring at once, off the data
    /// path (the first hashed request after a change would build it otherwise).
    hashed: AtomicBool,
    /// Endpoints ejected or unhealthy now (a hint for the fast path: 0 = skip those checks).
    out_of_rotation: AtomicI64,
    /// Endpoints ejected now, kept at most half of the ready ones.
    ejected_now: AtomicUsize,
    metrics: Option<Arc<Metrics>>,
}

/// The outcome of choosing an endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick {
    Endpoint(SocketAddr),
    /// The backend has no ready endpoint.
    NoEndpoints,
    /// Every endpoint has been tried for this request.
    Exhausted,
}

/// An endpoint chosen by a route with balancing annotations.
#[derive(Debug)]
pub struct Picked {
    pub state: Arc<EndpointState>,
    /// The value the affinity cookie must be (re)set to: the endpoint's id (`persistent`) or
    /// the session's ring key (`balanced`).
    pub set_cookie: Option<u64>,
}

/// What a balanced pick knows of the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickInput {
    /// The request's `upstream-hash-by` key.
    pub hash: Option<u64>,
    /// The value of the request's affinity cookie: an endpoint id (`persistent`) or a ring key
    /// (`balanced`).
    pub cookie: Option<u64>,
}

impl Backend {
    pub fn new(key: BackendKey, resolved: &ResolvedBackend) -> Self {
        Self::with_metrics(key, resolved, None)
    }

    fn with_metrics(
        key: BackendKey,
        resolved: &ResolvedBackend,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            label: key.to_string().into(),
            service: key.service.clone(),
            key,
            endpoints: ArcSwap::from_pointee(Endpoints::build(resolved, &HashMap::new())),
            protocol: AtomicBool::new(resolved.protocol == BackendProtocol::H2c),
            cursor: AtomicUsize::new(0),
            hashed: AtomicBool::new(false),
            out_of_rotation: AtomicI64::new(0),
            ejected_now: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The protocol the backend's Service port asks for.
    pub fn protocol(&self) -> BackendProtocol {
        if self.protocol.load(Ordering::Relaxed) {
            BackendProtocol::H2c
        } else {
            BackendProtocol::Http1
        }
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.load().ready.len()
    }

    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.load().ready.is_empty()
    }

    /// Endpoints ejected now.
    pub fn ejected_count(&self) -> usize {
        let eps = self.endpoints.load();
        eps.states.iter().filter(|s| s.is_ejected()).count()
    }

    /// Round-robin over ready endpoints, skipping those already tried for this request (and
    /// ejected ones, when there are any).
    pub fn pick(&self, tried: &[SocketAddr]) -> Pick {
        let eps = self.endpoints.load();
        if eps.ready.is_empty() {
            return Pick::NoEndpoints;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        if self.out_of_rotation.load(Ordering::Relaxed) <= 0 {
            if let Some(schedule) = eps.schedule.as_deref() {
                return eps
                    .scheduled(schedule, start, |i| !tried.contains(&eps.ready[i]))
                    .map_or(Pick::Exhausted, |i| Pick::Endpoint(eps.ready[i]));
            }
            return (0..eps.ready.len())
                .map(|i| eps.ready[(start + i) % eps.ready.len()])
                .find(|a| !tried.contains(a))
                .map_or(Pick::Exhausted, Pick::Endpoint);
        }
        self.round_robin(&eps, start, tried)
            .map_or(Pick::Exhausted, |i| Pick::Endpoint(eps.ready[i]))
    }

    /// The next ready endpoint from `start` (in schedule order, when weighted) not tried and
    /// not ejected; when all untried ones are ejected, the next untried one (ejection never
    /// empties a backend). Weight 0 is never picked here.
    fn round_robin(&self, eps: &Endpoints, start: usize, tried: &[SocketAddr]) -> Option<usize> {
        let untried = |i: &usize| !tried.contains(&eps.ready[*i]);
        if let Some(schedule) = eps.schedule.as_deref() {
            return eps
                .scheduled(schedule, start, |i| {
                    untried(&i) && self.available(&eps.states[i])
                })
                .or_else(|| eps.order(start).find(untried));
        }
        let mut order = eps.order(start);
        order
            .clone()
            .find(|i| untried(i) && self.available(&eps.states[*i]))
            .or_else(|| order.find(untried))
    }

    /// A pick for a route with balancing annotations: affinity cookie, else hash key, else the
    /// algorithm. `Err` carries the plain outcome when nothing can be picked.
    pub fn pick_balanced(
        &self,
        balance: &Balance,
        input: PickInput,
        tried: &[SocketAddr],
    ) -> Result<Picked, Pick> {
        let eps = self.endpoints.load();
        if eps.ready.is_empty() {
            return Err(Pick::NoEndpoints);
        }
        let usable = |s: &Arc<EndpointState>| !tried.contains(&s.addr) && self.available(s);
        if let Some(affinity) = &balance.affinity {
            if let Some(value) = input.cookie
                && let Some(s) = self.session_endpoint(&eps, affinity, value)
            {
                let moves = affinity.change_on_failure && tried.contains(&s.addr);
                if !moves && self.available(s) {
                    // A draining endpoint keeps its sessions while it serves; without
                    // change-on-failure, so does one that just failed this request.
                    return Ok(Picked {
                        state: s.clone(),
                        set_cookie: None,
                    });
                }
                if !moves
                    && affinity.mode == AffinityMode::Balanced
                    && let Some(i) = eps.ring().walk(value).find(|i| usable(&eps.states[*i]))
                {
                    // Out of rotation (ejected, unhealthy): the key's next owner on the ring
                    // serves the session meanwhile, with the same cookie.
                    return Ok(Picked {
                        state: eps.states[i].clone(),
                        set_cookie: None,
                    });
                }
            }
            if affinity.mode == AffinityMode::Balanced {
                return self
                    .new_balanced_session(&eps, tried)
                    .map(|(i, key)| Picked {
                        state: eps.states[i].clone(),
                        set_cookie: Some(key),
                    })
                    .ok_or(Pick::Exhausted);
            }
        }
        if balance.affinity.is_none()
            && let Some(key) = input.hash
        {
            self.mark_hashed();
            let ring = eps.ring();
            let found = ring
                .walk(key)
                .map(|i| &eps.states[i])
                .find(|s| usable(s))
                .or_else(|| {
                    ring.walk(key)
                        .map(|i| &eps.states[i])
                        .find(|s| !tried.contains(&s.addr))
                });
            return found
                .map(|s| Picked {
                    state: s.clone(),
                    set_cookie: None,
                })
                .ok_or(Pick::Exhausted);
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let i = match balance.algorithm {
            Algorithm::RoundRobin => self.round_robin(&eps, start, tried),
            Algorithm::Ewma | Algorithm::LeastRequest => {
                self.two_choices(&eps, start, tried, balance.algorithm)
            }
        };
        i.map(|i| Picked {
            state: eps.states[i].clone(),
            set_cookie: balance.affinity.is_some().then_some(eps.states[i].id),
        })
        .ok_or(Pick::Exhausted)
    }

    /// The publisher builds this backend's ring with each endpoint update from now on.
    fn mark_hashed(&self) {
        if !self.hashed.load(Ordering::Relaxed) {
            self.hashed.store(true, Ordering::Relaxed);
        }
    }

    /// The endpoint an affinity cookie's value names: by id (`persistent`), or the owner of
    /// the key on the ring (`balanced`; draining endpoints keep their points).
    fn session_endpoint<'e>(
        &self,
        eps: &'e Endpoints,
        affinity: &CookieAffinity,
        value: u64,
    ) -> Option<&'e Arc<EndpointState>> {
        match affinity.mode {
            AffinityMode::Persistent => eps.states.iter().find(|s| s.id == value),
            AffinityMode::Balanced => {
                self.mark_hashed();
                eps.ring().walk(value).next().map(|i| &eps.states[i])
            }
        }
    }

    /// A new `balanced` session: random keys until one's owner on the ring is a ready endpoint
    /// that is neither tried nor out of rotation; else, walking the ring from the last key, the
    /// first such endpoint, then the first untried one. The index into `states` and the key.
    fn new_balanced_session(&self, eps: &Endpoints, tried: &[SocketAddr]) -> Option<(usize, u64)> {
        self.mark_hashed();
        let ring = eps.ring();
        let ready = eps.ready.len();
        let untried = |i: usize| i < ready && !tried.contains(&eps.states[i].addr);
        let seed = self.cursor.fetch_add(1, Ordering::Relaxed) as u64;
        let mut key = balance::mix(seed ^ now_ns().rotate_left(32));
        for _ in 0..SESSION_DRAWS {
            if let Some(i) = ring.walk(key).next()
                && untried(i)
                && self.available(&eps.states[i])
            {
                return Some((i, key));
            }
            key = balance::mix(key ^ 0x9e37_79b9_7f4a_7c15);
        }
        ring.walk(key)
            .find(|i| untried(*i) && self.available(&eps.states[*i]))
            .or_else(|| ring.walk(key).find(|i| untried(*i)))
            .map(|i| (i, key))
    }

    /// Power of two choices: two ready endpoints drawn at random (not tried, not ejected), the
    /// cheaper one wins. EWMA cost: latency EWMA × (in flight + 1); least-request: in flight.
    /// Weighted endpoints are drawn from the schedule, so in proportion to their weights.
    fn two_choices(
        &self,
        eps: &Endpoints,
        seed: usize,
        tried: &[SocketAddr],
        algorithm: Algorithm,
    ) -> Option<usize> {
        let n = eps.ready.len();
        let r = balance::mix(seed as u64 ^ 0x9e37_79b9_7f4a_7c15);
        let eligible = |i: usize| !tried.contains(&eps.ready[i]) && self.available(&eps.states[i]);
        if let Some(schedule) = eps.schedule.as_deref() {
            // Two draws from the schedule (an endpoint's chance is its weight's share); the
            // second one draws again when it got the first.
            let Some(a) = eps.scheduled(schedule, r as usize, eligible) else {
                return self.round_robin(eps, seed, tried);
            };
            let b = eps
                .scheduled(schedule, (r >> 32) as usize, |i| i != a && eligible(i))
                .unwrap_or(a);
            return Some(Self::cheaper(eps, a, b, algorithm));
        }
        let (a, b) = if n == 1 {
            (0, 0)
        } else {
            let a = (r % n as u64) as usize;
            let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
            (a, b)
        };
        let (a, b) = if eligible(a) && eligible(b) {
            (a, b)
        } else {
            // Retries and ejections: draw among the eligible ones.
            let m = (0..n).filter(|i| eligible(*i)).count();
            if m == 0 {
                return self.round_robin(eps, seed, tried);
            }
            let ka = (r % m as u64) as usize;
            let kb = if m == 1 {
                ka
            } else {
                (ka + 1 + ((r >> 32) % (m as u64 - 1)) as usize) % m
            };
            let nth = |k| (0..n).filter(|i| eligible(*i)).nth(k);
            (nth(ka)?, nth(kb)?)
        };
        Some(Self::cheaper(eps, a, b, algorithm))
    }

    /// Of two ready endpoints, the one of lower cost (the first on a tie).
    fn cheaper(eps: &Endpoints, a: usize, b: usize, algorithm: Algorithm) -> usize {
        let now = now_ns();
        let cost = |i: usize| {
            let s = &eps.states[i];
            let in_flight = f64::from(s.in_flight());
            match algorithm {
                Algorithm::LeastRequest => in_flight,
                _ => s.latency(now).max(EWMA_FLOOR_NS) * (in_flight + 1.0),
            }
        };
        if cost(b) < cost(a) { b } else { a }
    }

    /// Whether an endpoint is in rotation; an ejection whose time is up ends here.
    fn available(&self, s: &EndpointState) -> bool {
        if s.is_unhealthy() {
            return false;
        }
        let until = s.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = now_ns();
        if now < until {
            return false;
        }
        if s.ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            s.restored_at.store(now, Ordering::Relaxed);
            s.failures.store(0, Ordering::Relaxed);
            self.ejection_ended();
            tracing::info!(backend = &*self.label, endpoint = %s.addr, "endpoint back in rotation after ejection");
        }
        true
    }

    /// Counts for an ejection that ended (by time, or because the endpoint went away).
    fn ejection_ended(&self) {
        self.out_of_rotation.fetch_sub(1, Ordering::Relaxed);
        let _ = self
            .ejected_now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        if let Some(m) = &self.metrics {
            m.ejected_endpoints
                .with_label_values(&[&self.key.namespace, &self.key.service])
                .dec();
        }
    }

    /// Counts for an endpoint whose health checks stopped failing (or that went away).
    fn unhealthy_ended(&self) {
        self.out_of_rotation.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.unhealthy_endpoints
                .with_label_values(&[&self.key.namespace, &self.key.service])
                .dec();
        }
    }

    /// Counts a request in flight on the endpoint while the returned guard lives.
    pub fn track(state: &Arc<EndpointState>) -> InFlightOn {
        InFlightOn::new(state.clone())
    }

    /// A response below 500: the endpoint's failure run ends.
    pub fn record_success(state: &EndpointState) {
        if state.failures.load(Ordering::Relaxed) != 0 {
            state.failures.store(0, Ordering::Relaxed);
        }
    }

    /// A 5xx response or a failed connection. `connect`: the connection failed (penalises the
    /// EWMA too).
    pub fn record_failure(&self, state: &EndpointState, outlier: Option<&Outlier>, connect: bool) {
        if connect {
            state.observe_latency(CONNECT_FAILURE_PENALTY);
        }
        let Some(outlier) = outlier else { return };
        let n = state.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= outlier.consecutive_failures {
            self.eject(state, outlier, n);
        }
    }

    fn eject(&self, s: &EndpointState, outlier: &Outlier, failures: u32) {
        if s.is_ejected() || !self.holds(s) {
            return;
        }
        // Never more than half of the ready endpoints (none of a single one).
        let cap = self.endpoints.load().ready.len() / 2;
        if self
            .ejected_now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_err()
        {
            tracing::debug!(backend = &*self.label, endpoint = %s.addr, failures, "endpoint not ejected: ejection cap reached");
            return;
        }
        let now = now_ns();
        // A run of ejections ends once the endpoint stayed in rotation as long as it was out.
        let prev = s.ejections.load(Ordering::Relaxed);
        let restored = s.restored_at.load(Ordering::Relaxed);
        let prev_for =
            u64::try_from(outlier.ejection_for(prev.max(1)).as_nanos()).unwrap_or(u64::MAX);
        let run = if prev > 0 && now.saturating_sub(restored) < prev_for {
            prev + 1
        } else {
            1
        };
        let time = outlier.ejection_for(run);
        let until = now.saturating_add(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
        if s.ejected_until
            .compare_exchange(0, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.ejected_now.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        s.ejections.store(run, Ordering::Relaxed);
        self.out_of_rotation.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            let labels = [&*self.key.namespace, &*self.key.service];
            m.endpoint_ejections.with_label_values(&labels).inc();
            m.ejected_endpoints.with_label_values(&labels).inc();
        }
        tracing::warn!(backend = &*self.label, endpoint = %s.addr, failures, ejection = run,
            ejected_ms = time.as_millis() as u64, "endpoint ejected after consecutive failures");
    }

    /// Every serving endpoint's state (ready, then draining), for the health checker.
    pub fn serving_endpoints(&self) -> Vec<Arc<EndpointState>> {
        self.endpoints.load().states.clone()
    }

    /// Whether `s` is still one of the backend's endpoints (not replaced by an update).
    fn holds(&self, s: &EndpointState) -> bool {
        self.endpoints
            .load()
            .states
            .iter()
            .any(|e| std::ptr::eq(&**e, s))
    }

    /// One active health-check result: enough failures in a row take the endpoint out, enough
    /// passes bring it back. Called by the backend's checker only.
    pub fn record_probe(&self, s: &EndpointState, ok: bool, check: &HealthCheck) {
        let streak = s.probe_streak.load(Ordering::Relaxed);
        let streak = match (ok, streak) {
            (true, n) if n > 0 => n.saturating_add(1),
            (true, _) => 1,
            (false, n) if n < 0 => n.saturating_sub(1),
            (false, _) => -1,
        };
        s.probe_streak.store(streak, Ordering::Relaxed);
        let change = if s.is_unhealthy() {
            ok && streak.unsigned_abs() >= check.healthy_threshold
        } else {
            !ok && streak.unsigned_abs() >= check.unhealthy_threshold
        };
        // An endpoint removed meanwhile is left alone (its counts were settled by the update).
        if !change || !self.holds(s) {
            return;
        }
        let was_unhealthy = s.unhealthy.swap(!ok, Ordering::Relaxed);
        if was_unhealthy != ok {
            return;
        }
        if ok {
            self.unhealthy_ended();
        } else {
            self.out_of_rotation.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.unhealthy_endpoints
                    .with_label_values(&[&self.key.namespace, &self.key.service])
                    .inc();
            }
        }
        if ok {
            tracing::info!(backend = &*self.label, endpoint = %s.addr, passes = streak, "endpoint healthy again");
        } else {
            tracing::warn!(backend = &*self.label, endpoint = %s.addr, failures = -streak, path = %check.path, "endpoint failed its health checks");
        }
    }

    /// Health checks stopped: every endpoint is back in rotation as far as they are concerned.
    pub fn clear_health(&self) {
        for s in self.endpoints.load().states.iter() {
            s.probe_streak.store(0, Ordering::Relaxed);
            if s.unhealthy.swap(false, Ordering::Relaxed) {
                self.unhealthy_ended();
            }
        }
    }

    /// An endpoint leaves the backend: its ejection and health marks end.
    fn release(&self, s: &EndpointState) {
        if s.unhealthy.swap(false, Ordering::Relaxed) {
            self.unhealthy_ended();
        }
        if s.ejected_until.swap(0, Ordering::Relaxed) != 0 {
            self.ejection_ended();
        }
    }

    /// The backend leaves the registry: its gauges drop what it held.
    fn release_all(&self) {
        for s in self.endpoints.load().states.iter() {
            self.release(s);
        }
    }

    fn update(&self, resolved: &ResolvedBackend) {
        let eps = self.endpoints.load();
        let draining = eps.states[eps.ready.len()..].iter().map(|s| s.addr);
        if eps.ready != resolved.addrs
            || !draining.eq(resolved.draining.iter().copied())
            || eps.weights != resolved.weights
        {
            let old: HashMap<SocketAddr, Arc<EndpointState>> =
                eps.states.iter().map(|s| (s.addr, s.clone())).collect();
            let new = Endpoints::build(resolved, &old);
            if self.hashed.load(Ordering::Relaxed) {
                new.ring();
            }
            // Ejected or unhealthy endpoints that are gone are no longer out of rotation.
            for s in eps
                .states
                .iter()
                .filter(|s| !new.states.iter().any(|n| n.addr == s.addr))
            {
                self.release(s);
            }
            self.endpoints.store(Arc::new(new));
        }
        self.protocol
            .store(resolved.protocol == BackendProtocol::H2c, Ordering::Relaxed);
    }
}

impl Endpoints {
    /// The snapshot of `resolved`, keeping the state of addresses in `old`.
    fn build(resolved: &ResolvedBackend, old: &HashMap<SocketAddr, Arc<EndpointState>>) -> Self {
        let states = resolved
            .addrs
            .iter()
            .chain(&resolved.draining)
            .map(|a| {
                old.get(a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(EndpointState::new(*a)))
            })
            .collect();
        let n = resolved.addrs.len();
        // Weights are of every serving endpoint; the schedule is of the ready ones, and only
        // when theirs differ.
        let ready_weights = resolved.weights.get(..n).unwrap_or(&[]);
        let schedule = ready_weights
            .windows(2)
            .any(|w| w[0] != w[1])
            .then(|| balance::smooth_schedule(ready_weights).into_boxed_slice())
            .filter(|s| !s.is_empty());
        let weights = if resolved.weights.len() == states_len(resolved) {
            resolved.weights.clone()
        } else {
            Vec::new()
        };
        Self {
            ready: resolved.addrs.clone(),
            states,
            weights,
            schedule,
            ring: OnceLock::new(),
        }
    }
}

fn states_len(resolved: &ResolvedBackend) -> usize {
    resolved.addrs.len() + resolved.draining.len()
}

/// Every backend in use, by key. Lives off the hot path (in the publisher); route tables hold
/// `Arc<Backend>`s out of it, so an endpoint update reaches the data path without a rebuild.
#[derive(Debug, Default)]
pub struct BackendRegistry {
    backends: HashMap<BackendKey, Arc<Backend>>,
    metrics: Option<Arc<Metrics>>,
}

impl BackendRegistry {
    /// A registry whose backends count ejections in `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        Self {
            backends: HashMap::new(),
            metrics: Some(metrics),
        }
    }

    /// Updates endpoints of known backends, adds new ones and forgets those no longer named.
    pub fn sync(&mut self, endpoints: &EndpointSet) {
        self.backends.retain(|k, b| {
            let keep = endpoints.0.contains_key(k);
            if !keep {
                b.release_all();
            }
            keep
        });
        for (key, resolved) in &endpoints.0 {
            match self.backends.get(key) {
                Some(b) => b.update(resolved),
                None => {
                    let b = Backend::with_metrics(key.clone(), resolved, self.metrics.clone());
                    self.backends.insert(key.clone(), Arc::new(b));
                }
            }
        }
    }

    /// Like [`BackendRegistry::sync`], for the named backends only (the others are unchanged).
    pub fn sync_keys<'a>(
        &mut self,
        endpoints: &EndpointSet,
        keys: impl IntoIterator<Item = &'a BackendKey>,
    ) {
        for key in keys {
            match (endpoints.0.get(key), self.backends.get(key)) {
                (None, _) => {
                    if let Some(b) = self.backends.remove(key) {
                        b.release_all();
                    }
                }
                (Some(resolved), Some(b)) => b.update(resolved),
                (Some(resolved), None) => {
                    let b = Backend::with_metrics(key.clone(), resolved, self.metrics.clone());
                    self.backends.insert(key.clone(), Arc::new(b));
                }
            }
        }
    }

    pub fn get(&self, key: &BackendKey) -> Option<&Arc<Backend>> {
        self.backends.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_sync::ServicePortRef;

    fn resolved(addrs: Vec<SocketAddr>) -> ResolvedBackend {
        ResolvedBackend {
            addrs,
            protocol: BackendProtocol::Http1,
            draining: vec![],
            weights: vec![],
        }
    }

    fn key() -> BackendKey {
        BackendKey {
            namespace: "ns".into(),
            service: "svc".into(),
            port: ServicePortRef::Number(80),
        }
    }

    #[test]
    fn round_robin_skips_tried_and_reports_exhaustion() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let be = Backend::new(key(), &resolved(vec![a, b]));
        let first = be.pick(&[]);
        let second = be.pick(&[]);
        assert_ne!(first, second);
        assert_eq!(be.pick(&[a]), Pick::Endpoint(b));
        assert_eq!(be.pick(&[a, b]), Pick::Exhausted);
        assert_eq!(
            Backend::new(key(), &resolved(vec![])).pick(&[]),
            Pick::NoEndpoints
        );
    }

    #[test]
    fn registry_keeps_backend_identity_across_endpoint_updates() {
        let mut reg = BackendRegistry::default();
        let mut set = EndpointSet::default();
        set.0
            .insert(key(), resolved(vec!["127.0.0.1:1".parse().unwrap()]));
        reg.sync(&set);
        let before = reg.get(&key()).unwrap().clone();
        set.0.insert(
            key(),
            ResolvedBackend {
                addrs: vec!["127.0.0.1:2".parse().unwrap()],
                protocol: BackendProtocol::H2c,
                draining: vec![],
                weights: vec![],
            },
        );
        reg.sync(&set);
        let after = reg.get(&key()).unwrap();
        assert!(Arc::ptr_eq(&before, after));
        assert_eq!(
            before.pick(&[]),
            Pick::Endpoint("127.0.0.1:2".parse().unwrap())
        );
        assert_eq!(before.protocol(), BackendProtocol::H2c);
        reg.sync(&EndpointSet::default());
        assert!(reg.get(&key()).is_none());
    }

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([127, 0, 0, i], 80)))
            .collect()
    }

    fn balance(algorithm: Algorithm) -> Balance {
        Balance {
            algorithm,
            ..Balance::default()
        }
    }

    /// Today's affinity: sessions pinned by endpoint id, moved after a failure.
    fn persistent_affinity() -> CookieAffinity {
        CookieAffinity {
            name: "c".into(),
            path: None,
            attributes: String::new(),
            attributes_without_samesite: None,
            mode: AffinityMode::Persistent,
            change_on_failure: true,
        }
    }

    fn affinity(mode: AffinityMode, change_on_failure: bool) -> Balance {
        Balance {
            affinity: Some(CookieAffinity {
                mode,
                change_on_failure,
                ..persistent_affinity()
            }),
            ..Balance::default()
        }
    }

    /// The endpoint a session cookie leads to, and whether the cookie is set again.
    fn session(
        be: &Backend,
        bal: &Balance,
        cookie: u64,
        tried: &[SocketAddr],
    ) -> (SocketAddr, Option<u64>) {
        let input = PickInput {
            hash: None,
            cookie: Some(cookie),
        };
        let p = be.pick_balanced(bal, input, tried).unwrap();
        (p.state.addr, p.set_cookie)
    }

    #[test]
    fn change_on_failure_moves_the_session_or_keeps_it() {
        let a = addrs(3);
        let be = Backend::new(key(), &resolved(a.clone()));
        for mode in [AffinityMode::Persistent, AffinityMode::Balanced] {
            let keep = affinity(mode, false);
            let first = be.pick_balanced(&keep, PickInput::default(), &[]).unwrap();
            let cookie = first.set_cookie.unwrap();
            let home = first.state.addr;
            assert_eq!(session(&be, &keep, cookie, &[]), (home, None), "{mode:?}");
            // Off: the retry goes to the session's endpoint again, the cookie stays.
            assert_eq!(
                session(&be, &keep, cookie, &[home]),
                (home, None),
                "{mode:?}"
            );
            // On: another endpoint, and the cookie moves there.
            let change = affinity(mode, true);
            let (other, set) = session(&be, &change, cookie, &[home]);
            assert_ne!(other, home, "{mode:?}");
            let set = set.unwrap();
            assert_eq!(session(&be, &change, set, &[]), (other, None), "{mode:?}");
        }
        // Out of rotation (ejected): a new endpoint and cookie whatever the setting.
        let outlier = Outlier {
            consecutive_failures: 1,
            ejection: Duration::from_secs(60),
        };
        let keep = affinity(AffinityMode::Persistent, false);
        let s = be.endpoints.load().states[0].clone();
        let balanced = affinity(AffinityMode::Balanced, false);
        let key = (0..)
            .map(balance::mix)
            .find(|k| session(&be, &balanced, *k, &[]).0 == s.addr)
            .unwrap();
        be.record_failure(&s, Some(&outlier), true);
        let (to, set) = session(&be, &keep, s.id, &[]);
        assert!(to != s.addr && set.is_some());
        // Balanced: the key's next owner on the ring, same cookie (back once it returns).
        let (to, set) = session(&be, &balanced, key, &[]);
        assert!(to != s.addr && set.is_none());
        let next = be
            .endpoints
            .load()
            .ring()
            .walk(key)
            .find(|i| *i != 0)
            .unwrap();
        assert_eq!(to, a[next]);
    }

    #[test]
    fn balanced_sessions_follow_the_ring_and_scaling_moves_a_share() {
        let n = 1000;
        let be = Backend::new(key(), &resolved(addrs(4)));
        let bal = affinity(AffinityMode::Balanced, false);
        let sessions: Vec<(u64, SocketAddr)> = (0..n)
            .map(|_| {
                let p = be.pick_balanced(&bal, PickInput::default(), &[]).unwrap();
                (p.set_cookie.unwrap(), p.state.addr)
            })
            .collect();
        let spread = counts(sessions.iter().map(|(_, a)| *a));
        assert!(spread.values().all(|c| *c > n / 8), "{spread:?}");
        for (cookie, addr) in &sessions {
            assert_eq!(session(&be, &bal, *cookie, &[]), (*addr, None));
        }
        // Four endpoints become six: about 2/6 of the sessions move, each to a new endpoint;
        // persistent sessions stay.
        let pinned: Vec<(u64, SocketAddr)> = (0..n)
            .map(|_| {
                let p = be
                    .pick_balanced(
                        &affinity(AffinityMode::Persistent, false),
                        PickInput::default(),
                        &[],
                    )
                    .unwrap();
                (p.set_cookie.unwrap(), p.state.addr)
            })
            .collect();
        be.update(&resolved(addrs(6)));
        let added = &addrs(6)[4..];
        let mut moved = 0;
        for (cookie, addr) in &sessions {
            let (now, set) = session(&be, &bal, *cookie, &[]);
            assert_eq!(set, None, "a moved session keeps its cookie");
            if now != *addr {
                moved += 1;
                assert!(added.contains(&now), "moved between old endpoints");
            }
        }
        let share = f64::from(moved) / f64::from(n as u32);
        assert!((0.22..0.45).contains(&share), "{moved} of {n} moved");
        let persistent = affinity(AffinityMode::Persistent, false);
        for (cookie, addr) in &pinned {
            assert_eq!(session(&be, &persistent, *cookie, &[]), (*addr, None));
        }
    }

    #[test]
    fn new_balanced_sessions_skip_draining_weight_zero_and_tried() {
        let a = addrs(3);
        let draining: SocketAddr = "127.0.0.9:80".parse().unwrap();
        let be = Backend::new(
            key(),
            &ResolvedBackend {
                addrs: a.clone(),
                draining: vec![draining],
                ..ResolvedBackend::default()
            },
        );
        let bal = affinity(AffinityMode::Balanced, true);
        for _ in 0..200 {
            let p = be
                .pick_balanced(&bal, PickInput::default(), &[a[0]])
                .unwrap();
            assert!(p.state.addr == a[1] || p.state.addr == a[2]);
        }
        assert!(be.pick_balanced(&bal, PickInput::default(), &a).is_err());
        let w = Backend::new(key(), &weighted(a.clone(), vec![3, 1, 0]));
        let c = counts((0..800).map(|_| picked(&w, &bal, PickInput::default(), &[])));
        assert_eq!(c.get(&a[2]), None, "{c:?}");
        let share = c[&a[0]] as f64 / 800.0;
        assert!((share - 0.75).abs() < 0.07, "{c:?}");
    }

    fn picked(b: &Backend, bal: &Balance, input: PickInput, tried: &[SocketAddr]) -> SocketAddr {
        b.pick_balanced(bal, input, tried).unwrap().state.addr
    }

    #[test]
    fn endpoint_state_survives_an_endpoint_swap() {
        let be = Backend::new(key(), &resolved(addrs(2)));
        let before = be.endpoints.load().states[0].clone();
        before.observe_latency(Duration::from_millis(7));
        let mut more = addrs(3);
        more.rotate_left(1);
        more.sort();
        be.update(&resolved(more));
        let eps = be.endpoints.load();
        let after = eps.states.iter().find(|s| s.addr == before.addr).unwrap();
        assert!(Arc::ptr_eq(&before, after));
        assert_eq!(eps.states.len(), 3);
    }

    #[test]
    fn hashing_is_stable_and_skips_tried() {
        let be = Backend::new(key(), &resolved(addrs(10)));
        let bal = Balance {
            hash_by: Some(k8s_sync::annotations::balance::parse_hash_by("$remote_addr").unwrap()),
            ..Balance::default()
        };
        let input = PickInput {
            hash: Some(42),
            cookie: None,
        };
        let first = picked(&be, &bal, input, &[]);
        for _ in 0..10 {
            assert_eq!(picked(&be, &bal, input, &[]), first);
        }
        // Once hashed, an endpoint update builds the ring off the data path.
        be.update(&resolved(addrs(11)));
        assert!(be.endpoints.load().ring.get().is_some());
        be.update(&resolved(addrs(10)));
        let second = picked(&be, &bal, input, &[first]);
        assert_ne!(second, first);
        // A retry of the same key goes to the same second choice.
        assert_eq!(picked(&be, &bal, input, &[first]), second);
        // No key: the algorithm (round-robin) spreads.
        let spread: std::collections::HashSet<_> = (0..10)
            .map(|_| picked(&be, &bal, PickInput::default(), &[]))
            .collect();
        assert_eq!(spread.len(), 10);
    }

    #[test]
    fn affinity_keeps_draining_endpoints_but_gives_them_no_new_sessions() {
        let ready = addrs(2);
        let draining: SocketAddr = "127.0.0.9:80".parse().unwrap();
        let be = Backend::new(
            key(),
            &ResolvedBackend {
                addrs: ready.clone(),
                draining: vec![draining],
                ..ResolvedBackend::default()
            },
        );
        let bal = Balance {
            affinity: Some(persistent_affinity()),
            ..Balance::default()
        };
        for _ in 0..20 {
            let p = be.pick_balanced(&bal, PickInput::default(), &[]).unwrap();
            assert_eq!(p.set_cookie, Some(p.state.id));
            assert_ne!(
                p.state.addr, draining,
                "a new session went to a draining endpoint"
            );
        }
        let pinned = PickInput {
            hash: None,
            cookie: Some(balance::endpoint_id(draining)),
        };
        let p = be.pick_balanced(&bal, pinned, &[]).unwrap();
        assert_eq!((p.state.addr, p.set_cookie), (draining, None));
        // The pinned endpoint failed: another one, and the cookie moves.
        let p = be.pick_balanced(&bal, pinned, &[draining]).unwrap();
        assert!(ready.contains(&p.state.addr) && p.set_cookie == Some(p.state.id));
        // An unknown id: a new session.
        let gone = PickInput {
            hash: None,
            cookie: Some(7),
        };
        assert!(
            be.pick_balanced(&bal, gone, &[])
                .unwrap()
                .set_cookie
                .is_some()
        );
    }

    #[test]
    fn ewma_prefers_the_fast_endpoint_and_least_request_the_idle_one() {
        let be = Backend::new(key(), &resolved(addrs(2)));
        let eps = be.endpoints.load_full();
        eps.states[0].observe_latency(Duration::from_millis(50));
        eps.states[1].observe_latency(Duration::from_millis(1));
        let bal = balance(Algorithm::Ewma);
        for _ in 0..50 {
            assert_eq!(
                picked(&be, &bal, PickInput::default(), &[]),
                eps.states[1].addr
            );
        }
        // Retry after the fast one failed: the slow one.
        assert_eq!(
            picked(&be, &bal, PickInput::default(), &[eps.states[1].addr]),
            eps.states[0].addr
        );
        // Enough requests in flight on the fast one outweigh its latency.
        let guards: Vec<_> = (0..60).map(|_| Backend::track(&eps.states[1])).collect();
        assert_eq!(
            picked(&be, &bal, PickInput::default(), &[]),
            eps.states[0].addr
        );
        let lr = balance(Algorithm::LeastRequest);
        assert_eq!(
            picked(&be, &lr, PickInput::default(), &[]),
            eps.states[0].addr
        );
        drop(guards);
        assert_eq!(eps.states[1].in_flight(), 0);
    }

    #[test]
    fn ejection_is_capped_backs_off_and_ends() {
        let be = Backend::new(key(), &resolved(addrs(4)));
        let eps = be.endpoints.load_full();
        let outlier = Outlier {
            consecutive_failures: 3,
            ejection: Duration::from_millis(200),
        };
        let (a, b, c) = (&eps.states[0], &eps.states[1], &eps.states[2]);
        for _ in 0..2 {
            be.record_failure(a, Some(&outlier), false);
        }
        Backend::record_success(a);
        be.record_failure(a, Some(&outlier), false);
        assert!(!a.is_ejected(), "a success ends the failure run");
        for _ in 0..2 {
            be.record_failure(a, Some(&outlier), false);
        }
        assert!(a.is_ejected());
        for _ in 0..3 {
            be.record_failure(b, Some(&outlier), true);
            be.record_failure(c, Some(&outlier), true);
        }
        assert!(b.is_ejected());
        assert!(!c.is_ejected(), "at most half of the endpoints are ejected");
        assert_eq!(be.ejected_count(), 2);
        // Ejected endpoints get no traffic, with round-robin and two choices.
        for _ in 0..20 {
            let Pick::Endpoint(p) = be.pick(&[]) else {
                panic!()
            };
            assert!(p != a.addr && p != b.addr);
            let p = picked(&be, &balance(Algorithm::Ewma), PickInput::default(), &[]);
            assert!(p != a.addr && p != b.addr);
        }
        // Everything else tried: an ejected endpoint still serves rather than none.
        assert!(matches!(
            be.pick(&[c.addr, eps.states[3].addr]),
            Pick::Endpoint(_)
        ));
        // After the ejection time, back in rotation.
        std::thread::sleep(Duration::from_millis(250));
        let seen: std::collections::HashSet<_> = (0..8)
            .filter_map(|_| match be.pick(&[]) {
                Pick::Endpoint(p) => Some(p),
                _ => None,
            })
            .collect();
        assert!(seen.contains(&a.addr) && seen.contains(&b.addr));
        assert_eq!(be.ejected_count(), 0);
        // Failing again at once: ejected twice as long.
        for _ in 0..3 {
            be.record_failure(a, Some(&outlier), false);
        }
        assert_eq!(a.ejections.load(Ordering::Relaxed), 2);
        let left = a.ejected_until.load(Ordering::Relaxed) - now_ns();
        assert!(left > 300_000_000 && left <= 400_000_000, "{left}");
    }

    fn weighted(addrs: Vec<SocketAddr>, weights: Vec<u16>) -> ResolvedBackend {
        ResolvedBackend {
            addrs,
            weights,
            ..ResolvedBackend::default()
        }
    }

    fn counts(picks: impl Iterator<Item = SocketAddr>) -> HashMap<SocketAddr, usize> {
        let mut c = HashMap::new();
        for p in picks {
            *c.entry(p).or_insert(0) += 1;
        }
        c
    }

    fn plain_pick(be: &Backend, tried: &[SocketAddr]) -> SocketAddr {
        match be.pick(tried) {
            Pick::Endpoint(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn weighted_round_robin_is_exact_per_cycle_and_skips_weight_zero() {
        let a = addrs(3);
        let be = Backend::new(key(), &weighted(a.clone(), vec![3, 1, 0]));
        assert!(be.endpoints.load().schedule.is_some());
        let c = counts((0..400).map(|_| plain_pick(&be, &[])));
        assert_eq!(
            (c.get(&a[0]), c.get(&a[1]), c.get(&a[2])),
            (Some(&300), Some(&100), None)
        );
        // The same through a route with balancing annotations.
        let bal = balance(Algorithm::RoundRobin);
        let c = counts((0..400).map(|_| picked(&be, &bal, PickInput::default(), &[])));
        assert_eq!((c[&a[0]], c[&a[1]], c.get(&a[2])), (300, 100, None));
        // A retry goes to the other weighted endpoint; weight 0 takes no retry either.
        assert_eq!(plain_pick(&be, &[a[0]]), a[1]);
        assert_eq!(plain_pick(&be, &[a[1]]), a[0]);
        assert_eq!(be.pick(&[a[0], a[1]]), Pick::Exhausted);
        // An annotation change alone (same addresses) reaches the backend: 1:1 again, plain.
        be.update(&weighted(a.clone(), vec![]));
        assert!(be.endpoints.load().schedule.is_none());
        let c = counts((0..300).map(|_| plain_pick(&be, &[])));
        assert!(a.iter().all(|x| c[x] == 100), "{c:?}");
        // Ready weights all equal but a draining one differs: plain round robin still.
        be.update(&ResolvedBackend {
            addrs: a[..2].to_vec(),
            draining: vec![a[2]],
            weights: vec![2, 2, 0],
            ..ResolvedBackend::default()
        });
        let eps = be.endpoints.load();
        assert!(eps.schedule.is_none() && eps.weights == [2, 2, 0]);
    }

    #[test]
    fn weighted_round_robin_skips_ejected_endpoints() {
        let a = addrs(4);
        let be = Backend::new(key(), &weighted(a.clone(), vec![5, 1, 1, 1]));
        let heavy = be.endpoints.load().states[0].clone();
        let outlier = Outlier {
            consecutive_failures: 1,
            ejection: Duration::from_secs(60),
        };
        be.record_failure(&heavy, Some(&outlier), false);
        assert!(heavy.is_ejected());
        // Its turns are shared by the others alike (not all given to the one after it).
        let c = counts((0..3000).map(|_| plain_pick(&be, &[])));
        assert_eq!(c.get(&a[0]), None, "{c:?}");
        assert!(a[1..].iter().all(|x| (900..1100).contains(&c[x])), "{c:?}");
        let ewma = balance(Algorithm::Ewma);
        assert!((0..100).all(|_| picked(&be, &ewma, PickInput::default(), &[]) != a[0]));
    }

    #[test]
    fn two_choices_draw_by_weight() {
        let a = addrs(3);
        let be = Backend::new(key(), &weighted(a.clone(), vec![3, 1, 0]));
        // Idle endpoints cost the same: the first draw wins, so picks follow the weights.
        for alg in [Algorithm::LeastRequest, Algorithm::Ewma] {
            let bal = balance(alg);
            let c = counts((0..4000).map(|_| picked(&be, &bal, PickInput::default(), &[])));
            assert_eq!(c.get(&a[2]), None, "{alg:?} {c:?}");
            let share = c[&a[0]] as f64 / 4000.0;
            assert!((share - 0.75).abs() < 0.05, "{alg:?} {c:?}");
        }
        // Load still counts: the heavy endpoint busy, the light one takes the requests.
        let eps = be.endpoints.load_full();
        let guards: Vec<_> = (0..5).map(|_| Backend::track(&eps.states[0])).collect();
        let lr = balance(Algorithm::LeastRequest);
        let c = counts((0..400).map(|_| picked(&be, &lr, PickInput::default(), &[])));
        assert!(c[&a[1]] > 150, "{c:?}");
        assert_eq!(c.get(&a[2]), None, "{c:?}");
        drop(guards);
        // Retried: the one left.
        assert_eq!(picked(&be, &lr, PickInput::default(), &[a[0]]), a[1]);
        assert!(
            be.pick_balanced(&lr, PickInput::default(), &[a[0], a[1]])
                .is_err()
        );
    }

    #[test]
    fn hashing_and_affinity_follow_weights() {
        let a = addrs(3);
        let be = Backend::new(key(), &weighted(a.clone(), vec![3, 1, 0]));
        let bal = Balance {
            hash_by: Some(k8s_sync::annotations::balance::parse_hash_by("$remote_addr").unwrap()),
            ..Balance::default()
        };
        let c = counts((0..4000u64).map(|k| {
            let input = PickInput {
                hash: Some(balance::mix(k)),
                cookie: None,
            };
            picked(&be, &bal, input, &[])
        }));
        assert_eq!(c.get(&a[2]), None, "weight 0 is not on the ring: {c:?}");
        let share = c[&a[0]] as f64 / 4000.0;
        assert!((share - 0.75).abs() < 0.05, "{c:?}");
        // Affinity: new sessions follow the weights; a session pinned to weight 0 stays.
        let sticky = Balance {
            affinity: Some(persistent_affinity()),
            ..Balance::default()
        };
        let c = counts((0..400).map(|_| picked(&be, &sticky, PickInput::default(), &[])));
        assert_eq!((c[&a[0]], c[&a[1]], c.get(&a[2])), (300, 100, None));
        let pinned = PickInput {
            hash: None,
            cookie: Some(balance::endpoint_id(a[2])),
        };
        let p = be.pick_balanced(&sticky, pinned, &[]).unwrap();
        assert_eq!((p.state.addr, p.set_cookie), (a[2], None));
    }

    #[test]
    fn a_single_endpoint_is_never_ejected() {
        let be = Backend::new(key(), &resolved(addrs(1)));
        let s = be.endpoints.load().states[0].clone();
        let outlier = Outlier {
            consecutive_failures: 1,
            ejection: Duration::from_secs(10),
        };
        for _ in 0..5 {
            be.record_failure(&s, Some(&outlier), false);
        }
        assert!(!s.is_ejected());
    }

    #[test]
    fn an_endpoint_leaving_ends_its_ejection() {
        let be = Backend::new(key(), &resolved(addrs(4)));
        let gone = be.endpoints.load().states[0].clone();
        let outlier = Outlier {
            consecutive_failures: 1,
            ejection: Duration::from_secs(60),
        };
        be.record_failure(&gone, Some(&outlier), false);
        assert!(gone.is_ejected());
        assert_eq!(be.out_of_rotation.load(Ordering::Relaxed), 1);
        be.update(&resolved(addrs(4)[1..].to_vec()));
        assert_eq!(be.out_of_rotation.load(Ordering::Relaxed), 0);
        assert_eq!(be.ejected_now.load(Ordering::Relaxed), 0);
        // A late failure on the departed endpoint's state ejects nothing.
        be.record_failure(&gone, Some(&outlier), false);
        assert_eq!(be.out_of_rotation.load(Ordering::Relaxed), 0);
        // The cap is counted afresh: one of three may go.
        let s = be.endpoints.load().states[0].clone();
        be.record_failure(&s, Some(&outlier), false);
        assert!(s.is_ejected());
    }
}
