//! The simulated provider's catalogue: VPS plans per location, platform and
//! billing period, the additions each plan can be configured with, and what an
//! order for them costs.
//!
//! Plan codes look like `29_6m`: plan number 29 (Lite, Linux, NVMe, Netherlands)
//! billed every 6 months. Numbers start at 29 and run through the locations in
//! the order of [`LOCATIONS`], [`PLANS_PER_LOCATION`] numbers per location.

use rust_decimal::Decimal;
use serde_json::{Value, json};

/// How often a plan is billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Period {
    Month,
    Quarter,
    HalfYear,
    Year,
}

impl Period {
    pub(crate) const ALL: [Period; 4] = [
        Period::Month,
        Period::Quarter,
        Period::HalfYear,
        Period::Year,
    ];

    /// Returns the suffix in plan codes, also the value of the `period` filter.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Period::Month => "1m",
            Period::Quarter => "3m",
            Period::HalfYear => "6m",
            Period::Year => "1y",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Period> {
        Period::ALL
            .into_iter()
            .find(|p| p.suffix().eq_ignore_ascii_case(text.trim()))
    }

    pub(crate) fn months(self) -> u32 {
        match self {
            Period::Month => 1,
            Period::Quarter => 3,
            Period::HalfYear => 6,
            Period::Year => 12,
        }
    }

    /// Length of one paid period in seconds (a month counts as 30 days).
    pub(crate) fn seconds(self) -> i64 {
        let days = match self {
            Period::Month => 30,
            Period::Quarter => 90,
            Period::HalfYear => 180,
            Period::Year => 365,
        };
        days * 86_400
    }

    pub(crate) fn code(self) -> &'static str {
        match self {
            Period::Month => "PLAN_PERIOD_MONTH",
            Period::Quarter => "PLAN_PERIOD_3_MONTH",
            Period::HalfYear => "PLAN_PERIOD_6_MONTH",
            Period::Year => "PLAN_PERIOD_1_YEAR",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Period::Month => "Every month",
            Period::Quarter => "Every 3 months",
            Period::HalfYear => "Every 6 months",
            Period::Year => "Every year",
        }
    }

    fn short_name(self) -> &'static str {
        match self {
            Period::Month => "1 Month",
            Period::Quarter => "3 Months",
            Period::HalfYear => "6 Months",
            Period::Year => "1 Year",
        }
    }

    /// Discount on the plan's own price for paying several months at once, in percent.
    fn discount_percent(self) -> Decimal {
        Decimal::from(match self {
            Period::Month => 0,
            Period::Quarter => 5,
            Period::HalfYear => 10,
            Period::Year => 15,
        })
    }
}

/// A data-centre city.
#[derive(Debug)]
pub(crate) struct City {
    pub(crate) code: &'static str,
    pub(crate) name: &'static str,
}

/// A country with one or more data-centre cities.
#[derive(Debug)]
pub(crate) struct Location {
    /// Two-letter country code, also the prefix of service ids.
    pub(crate) country: &'static str,
    pub(crate) name: &'static str,
    pub(crate) cities: &'static [City],
    /// Added to every plan's monthly price here, in cents.
    surcharge_cents: i64,
}

pub(crate) const LOCATIONS: &[Location] = &[
    Location {
        country: "NL",
        name: "Netherlands",
        cities: &[City {
            code: "ams",
            name: "Amsterdam",
        }],
        surcharge_cents: 0,
    },
    Location {
        country: "DE",
        name: "Germany",
        cities: &[City {
            code: "fra",
            name: "Frankfurt",
        }],
        surcharge_cents: 100,
    },
    Location {
        country: "PL",
        name: "Poland",
        cities: &[City {
            code: "waw",
            name: "Warsaw",
        }],
        surcharge_cents: 0,
    },
    Location {
        country: "US",
        name: "United States",
        cities: &[
            City {
                code: "nyc",
                name: "New York",
            },
            City {
                code: "lax",
                name: "Los Angeles",
            },
        ],
        surcharge_cents: 200,
    },
    Location {
        country: "EE",
        name: "Estonia",
        cities: &[City {
            code: "tll",
            name: "Tallinn",
        }],
        surcharge_cents: 0,
    },
    Location {
        country: "GB",
        name: "United Kingdom",
        cities: &[City {
            code: "lon",
            name: "London",
        }],
        surcharge_cents: 100,
    },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Platform {
    Linux,
    Windows,
}

impl Platform {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Platform::Linux => "PLATFORM_CODE_LINUX",
            Platform::Windows => "PLATFORM_CODE_WINDOWS",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Platform::Linux => "Linux",
            Platform::Windows => "Windows",
        }
    }

    /// Matches the `platforms[]` filter: `linux`, `windows` or the platform code.
    pub(crate) fn matches(self, filter: &str) -> bool {
        let filter = filter.trim();
        filter.eq_ignore_ascii_case(self.name()) || filter.eq_ignore_ascii_case(self.code())
    }
}

#[derive(Debug)]
struct Tier {
    name: &'static str,
    cpu_cores: u32,
    ram_gb: u32,
    drive_gb: u32,
    /// Linux price per month in cents, before the location surcharge.
    monthly_cents: i64,
    top: bool,
}

const TIERS: &[Tier] = &[
    Tier {
        name: "Lite",
        cpu_cores: 1,
        ram_gb: 1,
        drive_gb: 25,
        monthly_cents: 600,
        top: true,
    },
    Tier {
        name: "Start",
        cpu_cores: 1,
        ram_gb: 2,
        drive_gb: 40,
        monthly_cents: 900,
        top: false,
    },
    Tier {
        name: "Medium",
        cpu_cores: 2,
        ram_gb: 4,
        drive_gb: 60,
        monthly_cents: 1500,
        top: true,
    },
    Tier {
        name: "Premium",
        cpu_cores: 4,
        ram_gb: 8,
        drive_gb: 120,
        monthly_cents: 2500,
        top: false,
    },
    Tier {
        name: "Elite",
        cpu_cores: 8,
        ram_gb: 16,
        drive_gb: 240,
        monthly_cents: 4500,
        top: false,
    },
];

/// Per location: every tier on Linux, then these tiers on Windows.
const WINDOWS_TIERS: &[usize] = &[1, 2, 3];
/// Windows licence, added to the monthly price in cents.
const WINDOWS_LICENCE_CENTS: i64 = 800;
const FIRST_PLAN_NUMBER: u32 = 29;
pub(crate) const PLANS_PER_LOCATION: u32 = 8;

/// Most additional IPv4 addresses one VPS can have.
pub(crate) const MAX_EXTRA_IPS: u32 = 32;
const IP_MONTHLY_CENTS: i64 = 200;
const IP_SETUP_CENTS: i64 = 100;

/// A plan without its period: tier, platform and location.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) number: u32,
    pub(crate) location: &'static Location,
    tier: &'static Tier,
    pub(crate) platform: Platform,
}

impl Plan {
    pub(crate) fn by_number(number: u32) -> Option<Plan> {
        let index = number.checked_sub(FIRST_PLAN_NUMBER)?;
        let location = LOCATIONS.get((index / PLANS_PER_LOCATION) as usize)?;
        let slot = (index % PLANS_PER_LOCATION) as usize;
        let (tier, platform) = if slot < TIERS.len() {
            (&TIERS[slot], Platform::Linux)
        } else {
            (
                &TIERS[*WINDOWS_TIERS.get(slot - TIERS.len())?],
                Platform::Windows,
            )
        };
        Some(Plan {
            number,
            location,
            tier,
            platform,
        })
    }

    pub(crate) fn all() -> impl Iterator<Item = Plan> {
        let count = LOCATIONS.len() as u32 * PLANS_PER_LOCATION;
        (FIRST_PLAN_NUMBER..FIRST_PLAN_NUMBER + count).filter_map(Plan::by_number)
    }

    pub(crate) fn name(&self) -> &'static str {
        self.tier.name
    }

    /// Shown as a top offer (`promo.is_top`).
    pub(crate) fn is_top(&self) -> bool {
        self.tier.top
    }

    pub(crate) fn description(&self) -> String {
        format!(
            "{} {} NVMe, {}",
            self.tier.name,
            self.platform.name(),
            self.location.name
        )
    }

    fn monthly(&self) -> Decimal {
        let mut cents = self.tier.monthly_cents + self.location.surcharge_cents;
        if self.platform == Platform::Windows {
            cents += WINDOWS_LICENCE_CENTS;
        }
        Decimal::new(cents, 2)
    }

    pub(crate) fn city(&self, code: &str) -> Option<&'static City> {
        self.location
            .cities
            .iter()
            .find(|c| c.code.eq_ignore_ascii_case(code.trim()))
    }

    /// Lists the choices for one fixed category, the plan's default first.
    fn options(&self, category: Category) -> Vec<AdditionOption> {
        let t = self.tier;
        let option =
            |code: String, name: String, value: String, monthly_cents: i64| AdditionOption {
                category,
                code,
                name,
                value,
                monthly: Decimal::new(monthly_cents, 2),
                once: Decimal::ZERO,
                is_default: monthly_cents == 0,
            };
        match category {
            Category::Cpu => [t.cpu_cores, t.cpu_cores * 2]
                .into_iter()
                .map(|cores| {
                    option(
                        format!("{cores}c"),
                        format!("{cores} vCPU AMD EPYC"),
                        format!("{cores} vCPU"),
                        i64::from(cores - t.cpu_cores) * 300,
                    )
                })
                .collect(),
            Category::Ram => [t.ram_gb, t.ram_gb * 2, t.ram_gb * 4]
                .into_iter()
                .map(|gb| {
                    option(
                        format!("{gb}g"),
                        format!("{gb} GB DDR4"),
                        format!("{gb}Gb"),
                        i64::from(gb - t.ram_gb) * 150,
                    )
                })
                .collect(),
            Category::Drive => [t.drive_gb, t.drive_gb * 2, t.drive_gb * 4]
                .into_iter()
                .map(|gb| {
                    option(
                        format!("nvme{gb}g"),
                        format!("{gb} GB NVMe"),
                        format!("{gb}Gb"),
                        i64::from(gb - t.drive_gb) * 10,
                    )
                })
                .collect(),
            Category::Os => {
                let systems: &[(&str, &str)] = match self.platform {
                    Platform::Linux => &[
                        ("linux/ubuntu22#64", "Ubuntu 22.04 x64"),
                        ("linux/ubuntu24#64", "Ubuntu 24.04 x64"),
                        ("linux/debian11#64", "Debian 11 x64"),
                        ("linux/debian12#64", "Debian 12 x64"),
                        ("linux/almalinux9#64", "AlmaLinux 9 x64"),
                        ("linux/rockylinux9#64", "Rocky Linux 9 x64"),
                    ],
                    Platform::Windows => &[
                        ("windows/2022#64", "Windows Server 2022 x64"),
                        ("windows/2019#64", "Windows Server 2019 x64"),
                    ],
                };
                systems
                    .iter()
                    .enumerate()
                    .map(|(i, (code, name))| AdditionOption {
                        is_default: i == 0,
                        ..option(
                            (*code).to_owned(),
                            (*name).to_owned(),
                            self.platform.name().to_owned(),
                            0,
                        )
                    })
                    .collect()
            }
            Category::Backup => vec![
                option("none".into(), "None".into(), "None".into(), 0),
                option("weekly".into(), "Every week".into(), "Weekly".into(), 100),
                option("daily".into(), "Every day".into(), "Daily".into(), 300),
            ],
            Category::Ddos => vec![
                option(
                    "basic".into(),
                    "Basic protection of L3-L4 attacks".into(),
                    "Basic".into(),
                    0,
                ),
                option(
                    "advanced".into(),
                    "Advanced protection of L3-L7 attacks".into(),
                    "Advanced".into(),
                    2000,
                ),
            ],
            Category::Panel => {
                let mut panels = vec![
                    option("none".into(), "None".into(), "None".into(), 0),
                    option(
                        "ispmanager".into(),
                        "ISPmanager Lite".into(),
                        "ISPmanager".into(),
                        600,
                    ),
                ];
                if self.platform == Platform::Linux {
                    panels.push(AdditionOption {
                        // Installation of the panel is charged once.
                        once: Decimal::new(500, 2),
                        ..option(
                            "cpanel".into(),
                            "Personal Licence cPanel".into(),
                            "cPanel".into(),
                            1500,
                        )
                    });
                }
                panels
            }
            Category::Ip => Vec::new(),
        }
    }

    pub(crate) fn find_option(&self, category: Category, code: &str) -> Option<AdditionOption> {
        self.options(category)
            .into_iter()
            .find(|o| o.code.eq_ignore_ascii_case(code.trim()))
    }

    fn default_option(&self, category: Category) -> AdditionOption {
        self.options(category)
            .into_iter()
            .find(|o| o.is_default)
            .expect("every fixed category has a default")
    }
}

/// A plan billed over one period: what a plan code such as `29_6m` names.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanCode {
    pub(crate) plan: Plan,
    pub(crate) period: Period,
}

impl PlanCode {
    pub(crate) fn parse(code: &str) -> Option<PlanCode> {
        let (number, period) = code.trim().split_once('_')?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(PlanCode {
            plan: Plan::by_number(number.parse().ok()?)?,
            period: Period::parse(period)?,
        })
    }

    pub(crate) fn all() -> impl Iterator<Item = PlanCode> {
        Plan::all().flat_map(|plan| Period::ALL.map(|period| PlanCode { plan, period }))
    }

    pub(crate) fn code(&self) -> String {
        format!("{}_{}", self.plan.number, self.period.suffix())
    }

    /// Returns the plan's own price for the period before the period discount.
    fn list_price(&self) -> Decimal {
        self.plan.monthly() * Decimal::from(self.period.months())
    }

    /// Discount for the period, as a negative amount.
    fn discount(&self) -> Decimal {
        -(self.list_price() * self.period.discount_percent() / Decimal::from(100)).round_dp(2)
    }

    /// Returns the plan's price for the period as the catalogue shows it.
    pub(crate) fn price(&self) -> Decimal {
        self.list_price() + self.discount()
    }

    /// Recurring price of something charged `monthly` for this period.
    fn for_period(&self, monthly: Decimal) -> Decimal {
        monthly * Decimal::from(self.period.months())
    }

    /// Returns the same plan billed over another period.
    pub(crate) fn with_period(&self, period: Period) -> PlanCode {
        PlanCode {
            plan: self.plan,
            period,
        }
    }
}

/// Addition categories, by the short code orders use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Category {
    Cpu,
    Ram,
    Drive,
    Os,
    Ip,
    Backup,
    Ddos,
    Panel,
}

impl Category {
    pub(crate) const ALL: [Category; 8] = [
        Category::Cpu,
        Category::Ram,
        Category::Drive,
        Category::Os,
        Category::Ip,
        Category::Backup,
        Category::Ddos,
        Category::Panel,
    ];

    pub(crate) fn code(self) -> &'static str {
        match self {
            Category::Cpu => "cpu",
            Category::Ram => "ram",
            Category::Drive => "drive",
            Category::Os => "os",
            Category::Ip => "ip",
            Category::Backup => "backup",
            Category::Ddos => "ddos",
            Category::Panel => "panel",
        }
    }

    pub(crate) fn parse(code: &str) -> Option<Category> {
        Category::ALL
            .into_iter()
            .find(|c| c.code().eq_ignore_ascii_case(code.trim()))
    }

    fn name(self) -> &'static str {
        match self {
            Category::Cpu => "CPU",
            Category::Ram => "RAM",
            Category::Drive => "Drive",
            Category::Os => "Operating system",
            Category::Ip => "Additional IPv4",
            Category::Backup => "Backup",
            Category::Ddos => "DDoS protection",
            Category::Panel => "Control panel",
        }
    }

    fn json(self) -> Value {
        json!({"name": self.name(), "code": self.code()})
    }
}

/// One choice within a fixed addition category.
#[derive(Clone, Debug)]
pub(crate) struct AdditionOption {
    pub(crate) category: Category,
    pub(crate) code: String,
    pub(crate) name: String,
    value: String,
    /// Recurring price per month; zero for the plan's default.
    monthly: Decimal,
    /// Charged once, with the first invoice only.
    once: Decimal,
    is_default: bool,
}

/// A plan's full configuration: one option per fixed category plus extra IPs.
#[derive(Clone, Debug)]
pub(crate) struct Selection {
    pub(crate) cpu: AdditionOption,
    pub(crate) ram: AdditionOption,
    pub(crate) drive: AdditionOption,
    pub(crate) os: AdditionOption,
    pub(crate) backup: AdditionOption,
    pub(crate) ddos: AdditionOption,
    pub(crate) panel: AdditionOption,
    pub(crate) extra_ips: u32,
}

impl Selection {
    pub(crate) fn defaults(plan: &Plan) -> Selection {
        Selection {
            cpu: plan.default_option(Category::Cpu),
            ram: plan.default_option(Category::Ram),
            drive: plan.default_option(Category::Drive),
            os: plan.default_option(Category::Os),
            backup: plan.default_option(Category::Backup),
            ddos: plan.default_option(Category::Ddos),
            panel: plan.default_option(Category::Panel),
            extra_ips: 0,
        }
    }

    pub(crate) fn set(&mut self, option: AdditionOption) {
        let slot = match option.category {
            Category::Cpu => &mut self.cpu,
            Category::Ram => &mut self.ram,
            Category::Drive => &mut self.drive,
            Category::Os => &mut self.os,
            Category::Backup => &mut self.backup,
            Category::Ddos => &mut self.ddos,
            Category::Panel => &mut self.panel,
            Category::Ip => return,
        };
        *slot = option;
    }

    fn fixed(&self) -> [&AdditionOption; 7] {
        [
            &self.cpu,
            &self.ram,
            &self.drive,
            &self.os,
            &self.backup,
            &self.ddos,
            &self.panel,
        ]
    }
}

/// Money of one invoice line, as validate and order responses show it:
/// `total = price + once + discount`, with `discount` zero or negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Priced {
    pub(crate) price: Decimal,
    pub(crate) once: Decimal,
    pub(crate) discount: Decimal,
    pub(crate) total: Decimal,
}

impl Priced {
    /// First invoice of a new service: plan, additions and one-time fees.
    pub(crate) fn new_order(code: &PlanCode, selection: &Selection) -> Priced {
        let recurring = Priced::renewal(code, selection);
        let once = selection.fixed().iter().map(|o| o.once).sum::<Decimal>()
            + Decimal::new(IP_SETUP_CENTS, 2) * Decimal::from(selection.extra_ips);
        Priced {
            once,
            total: recurring.total + once,
            ..recurring
        }
    }

    /// Invoice for one more period of an existing service: no one-time fees.
    pub(crate) fn renewal(code: &PlanCode, selection: &Selection) -> Priced {
        let additions = additions_price(code, selection);
        let price = code.list_price() + additions;
        let discount = code.discount();
        Priced {
            price,
            once: Decimal::ZERO,
            discount,
            total: price + discount,
        }
    }
}

fn additions_price(code: &PlanCode, selection: &Selection) -> Decimal {
    let fixed: Decimal = selection
        .fixed()
        .iter()
        .map(|o| code.for_period(o.monthly))
        .sum();
    fixed + code.for_period(Decimal::new(IP_MONTHLY_CENTS, 2)) * Decimal::from(selection.extra_ips)
}

/// Money as the provider writes it: `"20$"`, `"10.50$"`, `"-3.60$"`.
pub(crate) fn money(amount: Decimal) -> String {
    let amount = amount.round_dp(2).normalize();
    if amount.fract().is_zero() {
        format!("{}$", amount.trunc())
    } else {
        format!("{amount:.2}$")
    }
}

/// Like [`money`], but a zero amount is the bare number `0`, as the catalogue
/// examples show for free configuration items.
pub(crate) fn money_or_zero(amount: Decimal) -> Value {
    if amount.is_zero() {
        json!(0)
    } else {
        json!(money(amount))
    }
}

fn option_json(code: &PlanCode, option: &AdditionOption) -> Value {
    let mut value = json!({
        "name": option.name,
        "code": option.code,
        "value": option.value,
        "price": money_or_zero(code.for_period(option.monthly)),
        "is_default": option.is_default,
        "category": option.category.json(),
    });
    if !option.once.is_zero() {
        value["once"] = json!(money(option.once));
    }
    value
}

/// Renders the `platform.config` block describing a configuration.
pub(crate) fn config_json(selection: &Selection) -> Value {
    let item = |o: &AdditionOption| {
        json!({
            "value": o.value,
            "name": o.name,
            "code": o.code,
            "price": 0,
            "category": o.category.json(),
        })
    };
    json!({
        "cpu": item(&selection.cpu),
        "ram": item(&selection.ram),
        "drive": item(&selection.drive),
        "os": item(&selection.os),
    })
}

/// Lists the priced additions of an order line, as validate and invoices show them.
pub(crate) fn additions_json(code: &PlanCode, selection: &Selection) -> Vec<Value> {
    let mut items: Vec<Value> = selection
        .fixed()
        .iter()
        .filter(|o| !o.is_default)
        .map(|o| {
            let mut v = json!({
                "name": o.name,
                "code": o.code,
                "price": money(code.for_period(o.monthly)),
                "category": o.category.json(),
            });
            if !o.once.is_zero() {
                v["once"] = json!(money(o.once));
            }
            v
        })
        .collect();
    if selection.extra_ips > 0 {
        let quantity = Decimal::from(selection.extra_ips);
        items.push(json!({
            "name": "Additional IPv4",
            "code": "ipv4",
            "price": money(code.for_period(Decimal::new(IP_MONTHLY_CENTS, 2)) * quantity),
            "once": money(Decimal::new(IP_SETUP_CENTS, 2) * quantity),
            "quantity": selection.extra_ips,
            "category": Category::Ip.json(),
        }));
    }
    items
}

fn plan_head_json(code: &PlanCode) -> Value {
    json!({
        "name": code.plan.name(),
        "code": code.code(),
        "price": money(code.price()),
        "period": {"name": code.period.name(), "code": code.period.code()},
        "description": code.plan.description(),
    })
}

/// Renders a plan as `GET /vps/plans` lists it and `GET /vps/plan/{code}` shows
/// it. Only the latter names the default city.
pub(crate) fn plan_json(code: &PlanCode, with_city: bool) -> Value {
    let plan = &code.plan;
    let defaults = Selection::defaults(plan);
    let mut location = json!({"name": plan.location.name, "code": plan.location.country});
    if with_city {
        let city = &plan.location.cities[0];
        location["variant"] = json!({"city": {"name": city.name, "code": city.code}});
    }
    json!({
        "plan": plan_head_json(code),
        "promo": {"is_top": plan.is_top()},
        "location": location,
        "platform": {
            "name": plan.platform.name(),
            "code": plan.platform.code(),
            "config": config_json(&defaults),
        },
        "network": {
            "protocols": {"ipv4": 1, "ipv6": 1},
            "port": "1 Gbit",
            "bandwidth": "Unlimited",
        },
        "access": {"vnc": true, "ssh": true},
        "security": {
            "backup": {"name": defaults.backup.name, "code": defaults.backup.code},
            "ddos": {"name": defaults.ddos.name, "code": defaults.ddos.code},
        },
        "tools": {
            "panel": {"name": defaults.panel.name, "code": defaults.panel.code},
            "admin": {"name": "None", "code": "none"},
            "virtualization": "KVM",
        },
    })
}

/// Renders what a plan can be configured with, for `GET /vps/configs/{code}`.
/// Prices are for the code's period.
pub(crate) fn configs_json(code: &PlanCode) -> Value {
    let plan = &code.plan;
    let list = |category| -> Vec<Value> {
        plan.options(category)
            .iter()
            .map(|o| option_json(code, o))
            .collect()
    };
    json!({
        "periods": Period::ALL.map(|period| {
            let other = code.with_period(period);
            json!({
                "name": period.short_name(),
                "code": period.code(),
                "plan": other.code(),
                "price": money(other.price()),
            })
        }),
        "location": {
            "name": plan.location.name,
            "code": plan.location.country,
            "variants": {
                "city": plan.location.cities.iter()
                    .map(|c| json!({"name": c.name, "code": c.code}))
                    .collect::<Vec<_>>(),
            },
        },
        "platforms": {
            "types": [{"name": plan.platform.name(), "code": plan.platform.code(), "price": 0}],
            "additions": {
                "fixed": {
                    "cpu": list(Category::Cpu),
                    "ram": list(Category::Ram),
                    "drive": list(Category::Drive),
                    "os": list(Category::Os),
                },
            },
        },
        "network": {
            "protocols": {
                "ipv4": {
                    "min": 0,
                    "max": MAX_EXTRA_IPS,
                    "default": 0,
                    "step": {
                        "value": 1,
                        "price": money(code.for_period(Decimal::new(IP_MONTHLY_CENTS, 2))),
                        "once": money(Decimal::new(IP_SETUP_CENTS, 2)),
                    },
                    "category": Category::Ip.json(),
                },
            },
        },
        "security": {
            "backup": list(Category::Backup),
            "ddos": list(Category::Ddos),
        },
        "tools": {
            "panel": list(Category::Panel),
        },
    })
}

/// Renders the `plan` block of an ordered service, with the chosen additions priced.
pub(crate) fn service_plan_json(code: &PlanCode, selection: &Selection) -> Value {
    let additions = additions_price(code, selection);
    json!({
        "name": code.plan.name(),
        "code": code.code(),
        "price": money(code.price()),
        "period": {"name": code.period.name(), "code": code.period.code()},
        "total": money(code.price() + additions),
        "additions": {
            "total": money(additions),
            "items": additions_json(code, selection),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_29_is_lite_linux_nl() {
        let code = PlanCode::parse("29_6m").expect("known plan");
        assert_eq!(code.plan.name(), "Lite");
        assert_eq!(code.plan.platform, Platform::Linux);
        assert_eq!(code.plan.location.country, "NL");
        assert_eq!(code.period, Period::HalfYear);
        assert_eq!(code.code(), "29_6m");
        assert_eq!(money(code.price()), "32.40$");
    }

    #[test]
    fn plan_code_unknown_rejected() {
        for code in ["", "29", "29_2m", "x_6m", "28_6m", "-1_1m", "9999_1m"] {
            assert!(PlanCode::parse(code).is_none(), "{code}");
        }
        assert_eq!(PlanCode::all().count(), LOCATIONS.len() * 8 * 4);
    }

    #[test]
    fn money_provider_format() {
        assert_eq!(money(Decimal::new(2000, 2)), "20$");
        assert_eq!(money(Decimal::new(1050, 2)), "10.50$");
        assert_eq!(money(Decimal::new(-360, 2)), "-3.60$");
        assert_eq!(money(Decimal::ZERO), "0$");
    }

    #[test]
    fn walkthrough_order_price_parts() {
        let code = PlanCode::parse("29_6m").unwrap();
        let mut selection = Selection::defaults(&code.plan);
        selection.set(
            code.plan
                .find_option(Category::Os, "linux/debian11#64")
                .unwrap(),
        );
        selection.set(code.plan.find_option(Category::Ram, "2g").unwrap());
        selection.extra_ips = 4;
        let priced = Priced::new_order(&code, &selection);
        // Plan 36 (6 x 6), RAM 9 (1.50 x 6), IPs 48 (4 x 2 x 6), setup 4, discount 10% of 36.
        assert_eq!(priced.price, Decimal::new(9300, 2));
        assert_eq!(priced.once, Decimal::new(400, 2));
        assert_eq!(priced.discount, Decimal::new(-360, 2));
        assert_eq!(priced.total, Decimal::new(9340, 2));
    }
}
