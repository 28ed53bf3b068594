//! The simulator's state: accounts, invoices, services, the simulated clock, rate
//! limit windows, injected faults and the request log. It lives behind one mutex
//! that is never held across an `await`.
//!
//! Time-driven changes (due invoices, provisioning, reboots, renewals) are applied
//! lazily by [`State::tick`], which runs before every request is handled.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use rust_decimal::Decimal;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::SimulatorConfig;
use super::catalogue::{City, PlanCode, Priced, Selection};
use super::model::{Faults, InvoiceSummary, RequestRecord, ServiceSummary, Stats};

/// How long a key stays valid after it is issued, in simulated seconds (70 days).
pub(crate) const KEY_LIFETIME_S: i64 = 6_048_000;
/// An unpaid invoice is cancelled this long after it is issued, in simulated seconds.
pub(crate) const INVOICE_DUE_S: i64 = 3 * 86_400;
/// The request log keeps this many most recent records.
const REQUEST_LOG_LIMIT: usize = 10_000;

/// Per-key budgets, in simulated milliseconds.
const BURST_WINDOW_MS: i64 = 10_000;
const BURST_LIMIT: usize = 150;
const BLOCK_MS: i64 = 3_600_000;
const CHALLENGE_WINDOW_MS: i64 = 60_000;
const CHALLENGE_LIMIT: usize = 300;

/// First 12 hex digits of the SHA-256 of a key: how logs and stats name a key.
pub(crate) fn fingerprint(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Simulated time: starts at the wall clock, runs `speed` times as fast as real
/// time, and can be pushed forward by the admin API.
pub(crate) struct Clock {
    epoch_ms: i64,
    started: Instant,
    speed: f64,
    advanced_ms: i64,
}

impl Clock {
    fn new(speed: f64) -> Clock {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Clock {
            epoch_ms,
            started: Instant::now(),
            speed,
            advanced_ms: 0,
        }
    }

    /// Simulated Unix time in milliseconds.
    pub(crate) fn now_ms(&self) -> i64 {
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0 * self.speed;
        self.epoch_ms + elapsed as i64 + self.advanced_ms
    }

    /// Simulated Unix time in seconds.
    pub(crate) fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    pub(crate) fn advance(&mut self, seconds: f64) {
        self.advanced_ms += (seconds * 1000.0) as i64;
    }

    /// Real time that `simulated_ms` take at this clock's speed.
    pub(crate) fn real_duration(&self, simulated_ms: i64) -> Duration {
        Duration::from_secs_f64(simulated_ms.max(0) as f64 / 1000.0 / self.speed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServiceStatus {
    Pending,
    Installing,
    Running,
    Stopped,
    Rebooting,
    Suspended,
    Canceled,
    Terminated,
}

impl ServiceStatus {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ServiceStatus::Pending => "Pending",
            ServiceStatus::Installing => "Installing",
            ServiceStatus::Running => "Running",
            ServiceStatus::Stopped => "Stopped",
            ServiceStatus::Rebooting => "Rebooting",
            ServiceStatus::Suspended => "Suspended",
            ServiceStatus::Canceled => "Cancelled",
            ServiceStatus::Terminated => "Terminated",
        }
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            ServiceStatus::Pending => "STATUS_CODE_PENDING",
            ServiceStatus::Installing => "STATUS_CODE_INSTALLING",
            ServiceStatus::Running => "STATUS_CODE_RUNNING",
            ServiceStatus::Stopped => "STATUS_CODE_STOPPED",
            ServiceStatus::Rebooting => "STATUS_CODE_REBOOTING",
            ServiceStatus::Suspended => "STATUS_CODE_SUSPENDED",
            ServiceStatus::Canceled => "STATUS_CODE_CANCELED",
            ServiceStatus::Terminated => "STATUS_CODE_TERMINATED",
        }
    }

    pub(crate) fn state_name(self) -> &'static str {
        match self {
            ServiceStatus::Pending | ServiceStatus::Installing => "Pending",
            ServiceStatus::Running | ServiceStatus::Stopped | ServiceStatus::Rebooting => "Active",
            ServiceStatus::Suspended => "Suspended",
            ServiceStatus::Canceled => "Canceled",
            ServiceStatus::Terminated => "Terminated",
        }
    }

    pub(crate) fn state_code(self) -> &'static str {
        match self {
            ServiceStatus::Pending | ServiceStatus::Installing => "STATE_CODE_PENDING",
            ServiceStatus::Running | ServiceStatus::Stopped | ServiceStatus::Rebooting => {
                "STATE_CODE_ACTIVE"
            }
            ServiceStatus::Suspended => "STATE_CODE_SUSPENDED",
            ServiceStatus::Canceled => "STATE_CODE_CANCELED",
            ServiceStatus::Terminated => "STATE_CODE_TERMINATED",
        }
    }

    /// Not suspended or ended: renewals apply once it has been paid for.
    fn is_live(self) -> bool {
        matches!(
            self,
            ServiceStatus::Pending
                | ServiceStatus::Installing
                | ServiceStatus::Running
                | ServiceStatus::Stopped
                | ServiceStatus::Rebooting
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InvoiceStatus {
    Unpaid,
    Paid,
    Cancelled,
}

impl InvoiceStatus {
    pub(crate) fn name(self) -> &'static str {
        match self {
            InvoiceStatus::Unpaid => "Unpaid",
            InvoiceStatus::Paid => "Paid",
            InvoiceStatus::Cancelled => "Cancelled",
        }
    }

    /// Invoice codes spell "cancelled" with two l, service codes with one.
    pub(crate) fn code(self) -> &'static str {
        match self {
            InvoiceStatus::Unpaid => "STATUS_UNPAID",
            InvoiceStatus::Paid => "STATUS_PAID",
            InvoiceStatus::Cancelled => "STATUS_CANCELLED",
        }
    }

    /// Matches the invoices list's `status` filter: the code, the name, or the
    /// code without `STATUS_`, any case, either spelling of cancelled.
    pub(crate) fn parse(text: &str) -> Option<InvoiceStatus> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("STATUS_").unwrap_or(&upper);
        match bare {
            "UNPAID" => Some(InvoiceStatus::Unpaid),
            "PAID" => Some(InvoiceStatus::Paid),
            "CANCELLED" | "CANCELED" => Some(InvoiceStatus::Cancelled),
            _ => None,
        }
    }
}

pub(crate) struct Account {
    pub(crate) fingerprint: String,
    /// Client number, the middle part of service ids.
    number: u32,
    pub(crate) balance: Decimal,
    /// Revoked by the admin API; also expired once older than [`KEY_LIFETIME_S`].
    revoked: bool,
    issued_at_s: i64,
    /// The account's one cart is busy with an order.
    pub(crate) order_busy: bool,
    services_created: u32,
}

impl Account {
    pub(crate) fn is_expired(&self, now_s: i64) -> bool {
        self.revoked || now_s - self.issued_at_s >= KEY_LIFETIME_S
    }
}

/// One validated order item, ready to be ordered `quantity` times.
#[derive(Clone, Debug)]
pub(crate) struct NewItem {
    pub(crate) identity: Option<String>,
    pub(crate) comment: Option<String>,
    pub(crate) code: PlanCode,
    pub(crate) city: &'static City,
    pub(crate) selection: Selection,
    pub(crate) quantity: u32,
    /// The item's `options` as sent (ssh, vnc ...), echoed back.
    pub(crate) options: Value,
}

pub(crate) struct Service {
    pub(crate) id: String,
    pub(crate) account: String,
    pub(crate) identity: Option<String>,
    pub(crate) comment: Option<String>,
    pub(crate) name: String,
    pub(crate) tags: Vec<String>,
    pub(crate) code: PlanCode,
    pub(crate) city: &'static City,
    pub(crate) selection: Selection,
    pub(crate) options: Value,
    pub(crate) status: ServiceStatus,
    /// When payment started provisioning (real time: see `provision`).
    provision_started: Option<Instant>,
    reboot_until: Option<Instant>,
    /// Main address first; empty until the VPS first runs.
    pub(crate) ips: Vec<Ipv4Addr>,
    pub(crate) root_password: String,
    pub(crate) vnc_password: String,
    pub(crate) auto_renew: bool,
    /// End of the paid period (simulated Unix seconds), once paid.
    pub(crate) paid_until: Option<i64>,
    pub(crate) running_since: Option<i64>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// An unpaid renewal invoice that keeps this service suspended.
    renewal_invoice: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineAction {
    New,
    Renew,
}

impl LineAction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LineAction::New => "new",
            LineAction::Renew => "renew",
        }
    }
}

/// One service on an invoice.
pub(crate) struct Line {
    pub(crate) service_id: String,
    pub(crate) action: LineAction,
    pub(crate) identity: Option<String>,
    pub(crate) comment: Option<String>,
    pub(crate) priced: Priced,
    /// Simulated Unix seconds of the period this line pays for, once paid.
    pub(crate) period: Option<(i64, i64)>,
}

pub(crate) struct Transaction {
    pub(crate) total: Decimal,
    pub(crate) success: bool,
    pub(crate) description: String,
}

pub(crate) struct Invoice {
    pub(crate) id: u64,
    pub(crate) account: String,
    pub(crate) invoiced_at: i64,
    pub(crate) due_to: i64,
    pub(crate) paid_at: Option<i64>,
    pub(crate) status: InvoiceStatus,
    pub(crate) status_message: String,
    pub(crate) total: Decimal,
    pub(crate) lines: Vec<Line>,
    pub(crate) transactions: Vec<Transaction>,
}

/// Reason a pay call is rejected.
pub(crate) enum PayError {
    NotFound,
    AlreadyPaid,
    Cancelled,
    InsufficientFunds { balance: Decimal, total: Decimal },
}

/// Reason a VPS action is rejected.
pub(crate) enum ActionError {
    NotFound,
    UnknownAction,
    NotAllowed(ServiceStatus),
}

/// Verdict of the per-key budgets on one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    Pass,
    /// Blocked for this much more simulated time, in milliseconds.
    Blocked(i64),
    Challenge,
}

#[derive(Default)]
struct RateWindows {
    /// Arrivals in the last minute, challenged ones included.
    minute: VecDeque<i64>,
    /// Arrivals in the last 10 seconds that got past the challenge.
    burst: VecDeque<i64>,
    blocked_until: Option<i64>,
    /// Every arrival in the last 10 and 60 seconds, for the window maxima in [`Stats`].
    seen_10s: VecDeque<i64>,
    seen_60s: VecDeque<i64>,
    max_10s: u32,
    max_60s: u32,
}

/// Appends `now` to a window of arrivals, drops those older than `window_ms` and returns
/// how many are left.
fn slide(arrivals: &mut VecDeque<i64>, now: i64, window_ms: i64) -> u32 {
    arrivals.push_back(now);
    while arrivals.front().is_some_and(|t| *t <= now - window_ms) {
        arrivals.pop_front();
    }
    u32::try_from(arrivals.len()).unwrap_or(u32::MAX)
}

/// Public addresses come from the documentation ranges, which are never routed.
struct IpPool {
    next: u32,
}

impl IpPool {
    const NETWORKS: [[u8; 3]; 3] = [[203, 0, 113], [198, 51, 100], [192, 0, 2]];
    /// Hosts .2 to .254 of each network; .1 is the gateway.
    const HOSTS: u32 = 253;

    // NOTE: after all 759 addresses are handed out the pool starts over, so a
    // very long run can show one address on two services.
    fn allocate(&mut self) -> Ipv4Addr {
        let index = self.next;
        self.next = self.next.wrapping_add(1);
        let network = Self::NETWORKS[(index / Self::HOSTS) as usize % Self::NETWORKS.len()];
        let host = 2 + (index % Self::HOSTS) as u8;
        Ipv4Addr::new(network[0], network[1], network[2], host)
    }
}

pub(crate) struct State {
    pub(crate) clock: Clock,
    /// Real time a paid service spends in Pending and then in Installing; also
    /// how long a reboot takes.
    pub(crate) provision: Duration,
    pub(crate) accounts: HashMap<String, Account>,
    pub(crate) invoices: BTreeMap<u64, Invoice>,
    /// Oldest first.
    pub(crate) services: Vec<Service>,
    pub(crate) faults: Faults,
    next_invoice_id: u64,
    next_account_number: u32,
    ip_pool: IpPool,
    limits: HashMap<String, RateWindows>,
    requests: VecDeque<RequestRecord>,
    requests_total: u64,
    next_seq: u64,
    orders_by_identity: BTreeMap<String, u32>,
    payments_by_identity: BTreeMap<String, u32>,
    /// See [`Stats::failed_payments`].
    pub(crate) failed_payments: u32,
    /// See [`Stats::rate_limit_refusals`].
    rate_limit_refusals: u32,
}

fn password(length: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(length)
        .map(char::from)
        .collect()
}

impl State {
    pub(crate) fn new(config: &SimulatorConfig) -> State {
        let speed = if config.speed.is_finite() && config.speed > 0.0 {
            config.speed
        } else {
            1.0
        };
        let mut state = State {
            clock: Clock::new(speed),
            provision: config.provision,
            accounts: HashMap::new(),
            invoices: BTreeMap::new(),
            services: Vec::new(),
            faults: Faults::default(),
            next_invoice_id: 325_001,
            next_account_number: 12_356_201,
            ip_pool: IpPool { next: 0 },
            limits: HashMap::new(),
            requests: VecDeque::new(),
            requests_total: 0,
            next_seq: 1,
            orders_by_identity: BTreeMap::new(),
            payments_by_identity: BTreeMap::new(),
            failed_payments: 0,
            rate_limit_refusals: 0,
        };
        for (key, balance) in &config.accounts {
            if !state.add_account(key, *balance) {
                tracing::warn!(
                    key = %fingerprint(key),
                    "account given twice; keeping the first balance"
                );
            }
        }
        state
    }

    /// Creates an account; false if the key already has one.
    pub(crate) fn add_account(&mut self, key: &str, balance: Decimal) -> bool {
        if self.accounts.contains_key(key) {
            return false;
        }
        let number = self.next_account_number;
        self.next_account_number += 1;
        self.accounts.insert(
            key.to_owned(),
            Account {
                fingerprint: fingerprint(key),
                number,
                balance,
                revoked: false,
                issued_at_s: self.clock.now_s(),
                order_busy: false,
                services_created: 0,
            },
        );
        true
    }

    /// Expires a key, or reissues it (valid for another 70 days from now).
    pub(crate) fn set_expired(&mut self, key: &str, expired: bool) -> bool {
        let now = self.clock.now_s();
        match self.accounts.get_mut(key) {
            Some(account) => {
                account.revoked = expired;
                if !expired {
                    account.issued_at_s = now;
                }
                true
            }
            None => false,
        }
    }

    /// Records an arrival with a key for the window maxima in [`Stats`]. The gate calls it
    /// before any fault or rate limit applies, so every request counts.
    pub(crate) fn count_arrival(&mut self, key_fingerprint: &str) {
        let now = self.clock.now_ms();
        let windows = self.limits.entry(key_fingerprint.to_owned()).or_default();
        let in_10s = slide(&mut windows.seen_10s, now, BURST_WINDOW_MS);
        let in_60s = slide(&mut windows.seen_60s, now, CHALLENGE_WINDOW_MS);
        windows.max_10s = windows.max_10s.max(in_10s);
        windows.max_60s = windows.max_60s.max(in_60s);
    }

    /// Counts a request against its key's budgets and returns whether it may pass.
    pub(crate) fn rate_check(&mut self, key_fingerprint: &str) -> Gate {
        let verdict = self.rate_verdict(key_fingerprint);
        if verdict != Gate::Pass {
            self.rate_limit_refusals = self.rate_limit_refusals.saturating_add(1);
        }
        verdict
    }

    fn rate_verdict(&mut self, key_fingerprint: &str) -> Gate {
        let now = self.clock.now_ms();
        let windows = self.limits.entry(key_fingerprint.to_owned()).or_default();

        windows.minute.push_back(now);
        while windows
            .minute
            .front()
            .is_some_and(|t| *t <= now - CHALLENGE_WINDOW_MS)
        {
            windows.minute.pop_front();
        }
        if windows.minute.len() > CHALLENGE_LIMIT {
            return Gate::Challenge;
        }

        if let Some(until) = windows.blocked_until {
            if now < until {
                return Gate::Blocked(until - now);
            }
            windows.blocked_until = None;
        }

        windows.burst.push_back(now);
        while windows
            .burst
            .front()
            .is_some_and(|t| *t <= now - BURST_WINDOW_MS)
        {
            windows.burst.pop_front();
        }
        if windows.burst.len() > BURST_LIMIT {
            windows.burst.clear();
            windows.blocked_until = Some(now + BLOCK_MS);
            return Gate::Blocked(BLOCK_MS);
        }
        Gate::Pass
    }

    /// Starts a request log record; returns its sequence number.
    pub(crate) fn begin_request(&mut self) -> u64 {
        self.requests_total += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    pub(crate) fn log_request(&mut self, record: RequestRecord) {
        if self.requests.len() == REQUEST_LOG_LIMIT {
            self.requests.pop_front();
        }
        self.requests.push_back(record);
    }

    pub(crate) fn requests(&self) -> Vec<RequestRecord> {
        let mut records: Vec<RequestRecord> = self.requests.iter().cloned().collect();
        records.sort_by_key(|r| r.seq);
        records
    }

    /// Takes one from the operation's dropped-responses budget. Returns true if
    /// this response is to be dropped.
    pub(crate) fn take_drop(&mut self, operation: &str) -> bool {
        match self.faults.drop_answers.get_mut(operation) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn service(&self, key: &str, id: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.account == key && s.id.eq_ignore_ascii_case(id))
    }

    pub(crate) fn service_mut(&mut self, key: &str, id: &str) -> Option<&mut Service> {
        self.services
            .iter_mut()
            .find(|s| s.account == key && s.id.eq_ignore_ascii_case(id))
    }

    pub(crate) fn invoice(&self, key: &str, id: u64) -> Option<&Invoice> {
        self.invoices.get(&id).filter(|i| i.account == key)
    }

    /// Applies everything that time has brought about since the last call.
    pub(crate) fn tick(&mut self) {
        self.cancel_overdue();
        self.advance_services();
        self.renew_services();
        self.cancel_overdue();
    }

    fn cancel_overdue(&mut self) {
        let now = self.clock.now_s();
        let overdue: Vec<u64> = self
            .invoices
            .values()
            .filter(|i| i.status == InvoiceStatus::Unpaid && now >= i.due_to)
            .map(|i| i.id)
            .collect();
        for id in overdue {
            self.cancel_invoice_now(id, "Not paid by the due date");
        }
    }

    /// Cancels an unpaid invoice and what waited on it: new services are
    /// cancelled, services waiting for a renewal are terminated.
    pub(crate) fn cancel_invoice_now(&mut self, id: u64, reason: &str) {
        let now = self.clock.now_s();
        let Some(invoice) = self.invoices.get_mut(&id) else {
            return;
        };
        invoice.status = InvoiceStatus::Cancelled;
        invoice.status_message = reason.to_owned();
        let lines: Vec<(String, LineAction)> = invoice
            .lines
            .iter()
            .map(|l| (l.service_id.clone(), l.action))
            .collect();
        for (service_id, action) in lines {
            let Some(service) = self.services.iter_mut().find(|s| s.id == service_id) else {
                continue;
            };
            match action {
                LineAction::New if service.status == ServiceStatus::Pending => {
                    service.status = ServiceStatus::Canceled;
                    service.updated_at = now;
                }
                LineAction::Renew if service.renewal_invoice == Some(id) => {
                    service.renewal_invoice = None;
                    // A service cancelled while suspended stays cancelled.
                    if service.status == ServiceStatus::Suspended {
                        service.status = ServiceStatus::Terminated;
                        service.updated_at = now;
                    }
                }
                _ => {}
            }
        }
    }

    fn advance_services(&mut self) {
        let now = self.clock.now_s();
        let provision = self.provision;
        let State {
            services, ip_pool, ..
        } = self;
        for service in services.iter_mut() {
            match service.status {
                ServiceStatus::Pending | ServiceStatus::Installing => {
                    let Some(started) = service.provision_started else {
                        continue;
                    };
                    let elapsed = started.elapsed();
                    if elapsed >= provision * 2 {
                        service.status = ServiceStatus::Running;
                        service.provision_started = None;
                        service.running_since = Some(now);
                        service.updated_at = now;
                        if service.ips.is_empty() {
                            for _ in 0..=service.selection.extra_ips {
                                service.ips.push(ip_pool.allocate());
                            }
                        }
                    } else if elapsed >= provision && service.status == ServiceStatus::Pending {
                        service.status = ServiceStatus::Installing;
                        service.updated_at = now;
                    }
                }
                ServiceStatus::Rebooting
                    if service
                        .reboot_until
                        .is_none_or(|until| Instant::now() >= until) =>
                {
                    service.status = ServiceStatus::Running;
                    service.reboot_until = None;
                    service.running_since = Some(now);
                    service.updated_at = now;
                }
                _ => {}
            }
        }
    }

    /// Renews services whose paid period has ended. With auto-renew on, the next
    /// period is charged from the balance, or the service is suspended until its
    /// renewal invoice is paid. With auto-renew off, the service is terminated.
    fn renew_services(&mut self) {
        let now = self.clock.now_s();
        for index in 0..self.services.len() {
            loop {
                let service = &self.services[index];
                let Some(paid_until) = service.paid_until else {
                    break;
                };
                if paid_until > now
                    || !service.status.is_live()
                    || service.renewal_invoice.is_some()
                {
                    break;
                }
                if !service.auto_renew {
                    let service = &mut self.services[index];
                    service.status = ServiceStatus::Terminated;
                    service.updated_at = paid_until;
                    break;
                }
                let priced = Priced::renewal(&service.code, &service.selection);
                let line = Line {
                    service_id: service.id.clone(),
                    action: LineAction::Renew,
                    identity: service.identity.clone(),
                    comment: service.comment.clone(),
                    priced,
                    period: None,
                };
                let key = service.account.clone();
                let id = self.insert_invoice(&key, paid_until, vec![line]);
                let affordable = self
                    .accounts
                    .get(&key)
                    .is_some_and(|a| a.balance >= priced.total);
                if affordable {
                    self.settle(id, paid_until, None);
                } else {
                    let service = &mut self.services[index];
                    service.status = ServiceStatus::Suspended;
                    service.renewal_invoice = Some(id);
                    service.updated_at = paid_until;
                    break;
                }
            }
        }
    }

    fn insert_invoice(&mut self, key: &str, invoiced_at: i64, lines: Vec<Line>) -> u64 {
        let id = self.next_invoice_id;
        self.next_invoice_id += 1;
        let total = lines.iter().map(|l| l.priced.total).sum();
        self.invoices.insert(
            id,
            Invoice {
                id,
                account: key.to_owned(),
                invoiced_at,
                due_to: invoiced_at + INVOICE_DUE_S,
                paid_at: None,
                status: InvoiceStatus::Unpaid,
                status_message: String::new(),
                total,
                lines,
                transactions: Vec::new(),
            },
        );
        id
    }

    /// Creates the unpaid invoice and pending services of a validated order.
    pub(crate) fn place_order(&mut self, key: &str, items: &[NewItem]) -> u64 {
        let now = self.clock.now_s();
        let mut lines = Vec::new();
        for item in items {
            *self
                .orders_by_identity
                .entry(item.identity.clone().unwrap_or_default())
                .or_default() += 1;
            for _ in 0..item.quantity {
                let service_id = self.create_service(key, item, now);
                lines.push(Line {
                    service_id,
                    action: LineAction::New,
                    identity: item.identity.clone(),
                    comment: item.comment.clone(),
                    priced: Priced::new_order(&item.code, &item.selection),
                    period: None,
                });
            }
        }
        self.insert_invoice(key, now, lines)
    }

    fn create_service(&mut self, key: &str, item: &NewItem, now: i64) -> String {
        let account = self
            .accounts
            .get_mut(key)
            .expect("orders come from known accounts");
        account.services_created += 1;
        let id = format!(
            "{}_{}_{}",
            item.code.plan.location.country, account.number, account.services_created
        );
        self.services.push(Service {
            id: id.clone(),
            account: key.to_owned(),
            identity: item.identity.clone(),
            comment: item.comment.clone(),
            name: id.clone(),
            tags: Vec::new(),
            code: item.code,
            city: item.city,
            selection: item.selection.clone(),
            options: item.options.clone(),
            status: ServiceStatus::Pending,
            provision_started: None,
            reboot_until: None,
            ips: Vec::new(),
            root_password: password(20),
            vnc_password: password(16),
            auto_renew: true,
            paid_until: None,
            running_since: None,
            created_at: now,
            updated_at: now,
            renewal_invoice: None,
        });
        id
    }

    /// Pays an invoice from the account balance. A rejected payment changes nothing
    /// but the failed-payment count and, for missing funds, a failed transaction.
    pub(crate) fn pay(
        &mut self,
        key: &str,
        id: u64,
        renew: Option<bool>,
    ) -> Result<Decimal, PayError> {
        let Some(invoice) = self.invoices.get_mut(&id).filter(|i| i.account == key) else {
            return Err(PayError::NotFound);
        };
        let balance = self.accounts.get(key).map_or(Decimal::ZERO, |a| a.balance);
        let refusal = match invoice.status {
            InvoiceStatus::Paid => Some(PayError::AlreadyPaid),
            InvoiceStatus::Cancelled => Some(PayError::Cancelled),
            InvoiceStatus::Unpaid if balance < invoice.total => {
                invoice.transactions.push(Transaction {
                    total: invoice.total,
                    success: false,
                    description: "Insufficient funds on the client balance".into(),
                });
                Some(PayError::InsufficientFunds {
                    balance,
                    total: invoice.total,
                })
            }
            InvoiceStatus::Unpaid => None,
        };
        if let Some(refusal) = refusal {
            self.failed_payments += 1;
            return Err(refusal);
        }
        let total = invoice.total;
        let now = self.clock.now_s();
        self.settle(id, now, renew);
        Ok(total)
    }

    /// Marks an unpaid invoice paid from the balance at `at` and gives its
    /// services what was paid for.
    fn settle(&mut self, id: u64, at: i64, renew: Option<bool>) {
        let invoice = self.invoices.get_mut(&id).expect("settled invoices exist");
        if let Some(account) = self.accounts.get_mut(&invoice.account) {
            account.balance -= invoice.total;
        }
        invoice.status = InvoiceStatus::Paid;
        invoice.paid_at = Some(at);
        invoice.status_message = "ok".into();
        invoice.transactions.push(Transaction {
            total: invoice.total,
            success: true,
            description: "Paid from client balance".into(),
        });

        let mut identities: Vec<String> = invoice
            .lines
            .iter()
            .map(|l| l.identity.clone().unwrap_or_default())
            .collect();
        identities.sort();
        identities.dedup();
        for identity in identities {
            *self.payments_by_identity.entry(identity).or_default() += 1;
        }

        let now = self.clock.now_s();
        for line in invoice.lines.iter_mut() {
            let Some(service) = self.services.iter_mut().find(|s| s.id == line.service_id) else {
                continue;
            };
            if let Some(auto_renew) = renew {
                service.auto_renew = auto_renew;
            }
            let seconds = service.code.period.seconds();
            match line.action {
                LineAction::New => {
                    if service.status == ServiceStatus::Pending {
                        service.provision_started = Some(Instant::now());
                        service.paid_until = Some(at + seconds);
                        line.period = Some((at, at + seconds));
                    }
                }
                LineAction::Renew => {
                    let start = service.paid_until.unwrap_or(at);
                    service.paid_until = Some(start + seconds);
                    line.period = Some((start, start + seconds));
                    if service.renewal_invoice == Some(id) {
                        service.renewal_invoice = None;
                        if service.status == ServiceStatus::Suspended {
                            service.status = ServiceStatus::Running;
                            service.running_since = Some(now);
                        }
                    }
                }
            }
            service.updated_at = now;
        }
    }

    /// Applies `start`, `stop`, `reboot`, `force` or `cancel` to a VPS. Asking
    /// for the status a VPS already has (or is heading to) is not an error.
    pub(crate) fn vps_action(
        &mut self,
        key: &str,
        id: &str,
        action: &str,
    ) -> Result<ServiceStatus, ActionError> {
        use ServiceStatus::*;
        let now = self.clock.now_s();
        let reboot = self.provision;
        let service = self.service_mut(key, id).ok_or(ActionError::NotFound)?;
        let status = service.status;
        let next = match (action.to_ascii_lowercase().as_str(), status) {
            ("start", Running | Rebooting) => status,
            ("start", Stopped) => Running,
            ("stop", Stopped) => Stopped,
            ("stop", Running | Rebooting) => Stopped,
            ("reboot" | "force", Running | Rebooting) => Rebooting,
            ("cancel", Canceled) => Canceled,
            ("cancel", Terminated) => return Err(ActionError::NotAllowed(status)),
            ("cancel", _) => Canceled,
            ("start" | "stop" | "reboot" | "force", _) => {
                return Err(ActionError::NotAllowed(status));
            }
            _ => return Err(ActionError::UnknownAction),
        };
        if next != status || next == Rebooting {
            service.status = next;
            service.updated_at = now;
            match next {
                Running => service.running_since = Some(now),
                Rebooting => service.reboot_until = Some(Instant::now() + reboot),
                _ => {}
            }
        }
        if next == Canceled && status == Pending {
            self.cancel_unpaid_invoice_of(id);
        }
        Ok(next)
    }

    /// Once every service of an unpaid order is cancelled, the invoice goes too.
    fn cancel_unpaid_invoice_of(&mut self, service_id: &str) {
        let found = self.invoices.values().find(|i| {
            i.status == InvoiceStatus::Unpaid && i.lines.iter().any(|l| l.service_id == service_id)
        });
        let Some(invoice) = found else {
            return;
        };
        let all_cancelled = invoice.lines.iter().all(|l| {
            self.services
                .iter()
                .any(|s| s.id == l.service_id && s.status == ServiceStatus::Canceled)
        });
        if all_cancelled {
            let id = invoice.id;
            self.cancel_invoice_now(id, "Cancelled with its services");
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let first = |lines: &[Line], pick: fn(&Line) -> &Option<String>| {
            lines
                .first()
                .and_then(|l| pick(l).clone())
                .unwrap_or_default()
        };
        Stats {
            orders_by_identity: self.orders_by_identity.clone(),
            payments_by_identity: self.payments_by_identity.clone(),
            failed_payments: self.failed_payments,
            invoices: self
                .invoices
                .values()
                .map(|i| InvoiceSummary {
                    id: i.id,
                    identity: first(&i.lines, |l| &l.identity),
                    comment: first(&i.lines, |l| &l.comment),
                    status: i.status.code().to_owned(),
                    total: i.total.normalize().to_string(),
                })
                .collect(),
            services: self
                .services
                .iter()
                .map(|s| ServiceSummary {
                    id: s.id.clone(),
                    identity: s.identity.clone().unwrap_or_default(),
                    status: s.status.code().to_owned(),
                    state: s.status.state_code().to_owned(),
                    name: s.name.clone(),
                    tags: s.tags.clone(),
                })
                .collect(),
            balances: self
                .accounts
                .values()
                .map(|a| (a.fingerprint.clone(), a.balance.normalize().to_string()))
                .collect(),
            requests_total: self.requests_total,
            max_requests_per_10s: self
                .limits
                .iter()
                .filter(|(_, w)| w.max_10s > 0)
                .map(|(fp, w)| (fp.clone(), w.max_10s))
                .collect(),
            max_requests_per_60s: self
                .limits
                .iter()
                .filter(|(_, w)| w.max_60s > 0)
                .map(|(fp, w)| (fp.clone(), w.max_60s))
                .collect(),
            rate_limit_refusals: self.rate_limit_refusals,
        }
    }
}
