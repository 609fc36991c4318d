//! Synthetic data of the catalog endpoints beyond users, departments and
//! establishments (leaves, contracts, time, expenses, locations, ...),
//! derived from the tenant's users so that joins give real answers: every
//! owner is an existing user, every department, establishment, leave type,
//! claim or nature an item points to exists. Built once, on the first
//! request to one of these endpoints, for at most [`MAX_OWNERS`] users (the
//! first by id), so a million-user tenant stays fast.

use serde_json::{Map, Value, json};

use super::data::{Collection, MS_PER_DAY, Meta, NO_DATE, Store, days_from_civil, fmt_day};
use super::data::{civil_from_days, splitmix64};

/// Users that own leaves, contracts, time entries, expenses and locations.
pub(crate) const MAX_OWNERS: usize = 100;

/// How an endpoint pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// Legacy v3 (`paging`, `fields`, filters), as `/api/v3/users`.
    V3,
    /// Legacy v4 (`limit`, `page`, `fields.root`), as establishments.
    V4,
}

/// One served collection.
#[derive(Debug)]
pub(crate) struct Served {
    /// Path, e.g. `/api/v3/leaves`.
    pub path: &'static str,
    /// Paging style.
    pub api: Api,
    /// Fields (dotted) the v3 endpoint filters on, besides `id`.
    pub filterable: &'static [&'static str],
    /// The records, sorted by id.
    pub coll: Collection,
}

/// Every derived collection.
#[derive(Debug, Default)]
pub(crate) struct Derived {
    pub served: Vec<Served>,
}

impl Derived {
    /// The collection served at `path`, if any.
    pub fn at(&self, path: &str) -> Option<&Served> {
        self.served.iter().find(|s| s.path == path)
    }
}

/// What the derived records need of a user.
struct Owner {
    id: u64,
    name: String,
    department: Option<u64>,
    legal_entity: u64,
    start_day: i64,
    end_day: Option<i64>,
}

fn day_of(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_str)
        .and_then(super::data::parse_naive_ms)
        .map(|ms| ms.div_euclid(MS_PER_DAY))
}

fn owners(store: &Store) -> Vec<Owner> {
    store
        .users
        .metas
        .iter()
        .take(MAX_OWNERS)
        .map(|m| {
            let r = store.user_record(m);
            let name = r
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| store.generator.name_of(m.id));
            Owner {
                id: u64::from(m.id),
                name,
                department: r.get("departmentId").and_then(Value::as_u64),
                legal_entity: r.get("legalEntityId").and_then(Value::as_u64).unwrap_or(1),
                start_day: day_of(r.get("dtContractStart")).unwrap_or(0),
                end_day: day_of(r.get("dtContractEnd")),
            }
        })
        .collect()
}

/// A deterministic hash of `(a, b, c)`.
fn h(a: u64, b: u64, c: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(a) ^ b.wrapping_mul(0x9E37)) ^ c)
}

/// Records (objects) with sequential ids from 1, as a collection.
fn collection(records: Vec<Value>) -> Collection {
    let records: Vec<Map<String, Value>> = records
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .collect();
    let mut metas: Vec<Meta> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            Some(Meta {
                id: u32::try_from(r.get("id")?.as_u64()?).ok()?,
                former: false,
                fixture: u32::try_from(i).ok()?,
                modified_ms: NO_DATE,
            })
        })
        .collect();
    metas.sort_by_key(|m| m.id);
    Collection::new(metas, records)
}

fn ymd(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Monday = 0 .. Sunday = 6.
fn weekday(day: i64) -> i64 {
    (day + 3).rem_euclid(7)
}

const LEAVE_TYPES: [&str; 5] = [
    "Congés payés",
    "RTT",
    "Maladie",
    "Congé sans solde",
    "Congé ancienneté",
];
const NATURES: [&str; 6] = ["Repas", "Train", "Avion", "Hôtel", "Taxi", "Kilométrique"];
const JOBS: [&str; 6] = [
    "Chargé·e de projet",
    "Développeur·se",
    "Comptable",
    "Commercial·e",
    "Responsable RH",
    "Support",
];

/// Builds every derived collection of `store`; `today` in days since 1970.
pub(crate) fn build(store: &Store, today: i64, time_entries: Option<u32>) -> Derived {
    let owners = owners(store);
    let establishments = u64::from(store.establishments);
    let establishment_of = |o: &Owner| {
        // Same legal unit as the user (odd establishments are unit 1).
        let le = o.legal_entity.clamp(1, 2);
        let choices = (establishments.saturating_sub(le)) / 2 + 1;
        le + 2 * (o.id % choices.max(1))
    };
    let offices = establishments.min(20);
    let mut served = Vec::new();
    let mut add =
        |path: &'static str, api: Api, filterable: &'static [&'static str], records: Vec<Value>| {
            served.push(Served {
                path,
                api,
                filterable,
                coll: collection(records),
            });
        };

    add(
        "/organization/structure/api/legal-units",
        Api::V4,
        &[],
        vec![
            json!({"id": 1, "name": "Acme RH France SAS", "code": "FR01", "countryCode": "FR",
                   "currencyCode": "EUR", "isArchived": false}),
            json!({"id": 2, "name": "Acme RH Suisse SA", "code": "CH01", "countryCode": "CH",
                   "currencyCode": "CHF", "isArchived": false}),
        ],
    );
    add(
        "/directory/api/4.0/work-contracts",
        Api::V4,
        &[],
        owners
            .iter()
            .map(|o| {
                json!({
                    "id": o.id,
                    "ownerId": o.id,
                    "establishmentId": establishment_of(o),
                    "typeName": if o.end_day.is_some() { "CDD" } else { "CDI" },
                    "jobTitle": JOBS[(h(o.id, 1, 0) % JOBS.len() as u64) as usize],
                    "startsOn": ymd(o.start_day),
                    "endsOn": o.end_day.map(ymd),
                })
            })
            .collect(),
    );
    add(
        "/api/v3/axes",
        Api::V3,
        &[],
        vec![
            json!({"id": 1, "name": "Centre de coût", "code": "CC", "isActive": true}),
            json!({"id": 2, "name": "Projet", "code": "PRJ", "isActive": true}),
        ],
    );
    add(
        "/api/v3/axisSections",
        Api::V3,
        &["axisId"],
        (1..=8u64)
            .map(|id| {
                let axis = if id <= 4 { 1 } else { 2 };
                json!({"id": id, "name": format!("Section {id}"), "code": format!("S{id:02}"),
                       "axisId": axis, "isActive": id != 8})
            })
            .collect(),
    );
    add(
        "/api/v3/roles",
        Api::V3,
        &[],
        [
            (1, "Administrateur"),
            (12, "Manager"),
            (55, "Collaborateur"),
            (56, "Gestionnaire de paie"),
        ]
        .iter()
        .map(|(id, name)| {
            json!({"id": id, "name": name, "description": format!("Rôle {name}"), "isActive": true})
        })
        .collect(),
    );
    add(
        "/api/v3/workcycles",
        Api::V3,
        &[],
        [35.0, 39.0, 28.0, 24.0, 35.0, 37.5]
            .iter()
            .enumerate()
            .map(|(i, hours)| {
                json!({"id": i + 1, "name": format!("Cycle {hours}h"), "weeklyHours": hours,
                       "isActive": true})
            })
            .collect(),
    );
    add(
        "/api/v3/extensionuserdefinitions",
        Api::V3,
        &[],
        [
            ("e_bloodType", "Groupe sanguin", "string"),
            ("e_tshirt", "Taille de t-shirt", "list"),
            ("e_badge", "Numéro de badge", "string"),
            ("e_remote", "Jours de télétravail", "number"),
        ]
        .iter()
        .enumerate()
        .map(|(i, (name, label, kind))| {
            json!({"id": i + 1, "name": name, "label": label, "type": kind, "isActive": true})
        })
        .collect(),
    );
    add(
        "/api/v3/leaveperiods/leavetypes",
        Api::V3,
        &[],
        LEAVE_TYPES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({"id": i + 1, "name": name, "unit": if i == 1 { "hour" } else { "day" },
                       "isActive": true})
            })
            .collect(),
    );
    add(
        "/api/v3/expenseNatures",
        Api::V3,
        &[],
        NATURES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({"id": i + 1, "name": name, "code": format!("N{:02}", i + 1),
                       "isActive": true})
            })
            .collect(),
    );
    let mut locations = vec![json!({"id": 1, "name": "Télétravail", "type": "home",
                                    "establishmentId": null})];
    locations.extend((1..=offices).map(|e| {
        json!({"id": e + 1, "name": format!("Bureau ET{e:04}"), "type": "office",
               "establishmentId": e})
    }));
    add(
        "/work-locations/public/api/work-locations",
        Api::V4,
        &[],
        locations,
    );

    let (leaves, requests) = leaves(&owners, today);
    add(
        "/api/v3/leaves",
        Api::V3,
        &[
            "date",
            "leavePeriod.ownerId",
            "leavePeriod.owner.departmentId",
            "isActive",
        ],
        leaves,
    );
    add(
        "/api/v3/leaveRequests",
        Api::V3,
        &["ownerId", "startDate", "endDate"],
        requests,
    );

    let current = |o: &&Owner| o.end_day.is_none_or(|d| d >= today) && o.start_day <= today;
    let workdays = |from: i64, to: i64| (from..=to).filter(|d| weekday(*d) < 5);
    let mut entries = Vec::new();
    let mut logs = Vec::new();
    let mut sheets = Vec::new();
    let mut places = Vec::new();
    for o in owners.iter().filter(current) {
        for d in workdays(today - 28, today - 1) {
            entries.push(json!({
                "id": entries.len() + 1,
                "ownerId": o.id,
                "startsAt": format!("{}T09:00:00", ymd(d)),
                "duration": if h(o.id, d as u64, 2).is_multiple_of(4) { 8.0 } else { 7.5 },
                "axisSectionId": 1 + h(o.id, d as u64, 3) % 8,
            }));
        }
        for k in 0..10u64 {
            let d = today - 1 - (h(o.id, k, 4) % 30) as i64;
            let minute = h(o.id, k, 5) % (10 * 60);
            logs.push(json!({
                "id": logs.len() + 1,
                "userId": o.id,
                "date": format!("{}T{:02}:{:02}:00", ymd(d), 8 + minute / 60, minute % 60),
                "action": "login",
                "ipAddress": format!("10.0.{}.{}", o.id % 250, 1 + k),
            }));
        }
        let monday = today - weekday(today);
        for w in 1..=8i64 {
            let starts = monday - 7 * w;
            sheets.push(json!({
                "id": sheets.len() + 1,
                "ownerId": o.id,
                "startsOn": fmt_day(starts),
                "endsOn": fmt_day(starts + 6),
                "status": if w == 1 { "submitted" } else { "approved" },
            }));
        }
        for d in workdays(today - 5, today + 9) {
            for is_am in [true, false] {
                let home = h(o.id, d as u64, 6).is_multiple_of(3);
                let office = 1 + establishment_of(o).min(offices.max(1));
                places.push(json!({
                    "id": places.len() + 1,
                    "ownerId": o.id,
                    "date": ymd(d),
                    "isAM": is_am,
                    "workLocationId": if home { 1 } else { office },
                }));
            }
        }
    }
    if let Some(n) = time_entries {
        entries = many_time_entries(&owners, today, n);
    }
    add(
        "/api/v3/timeentries",
        Api::V3,
        &["ownerId", "startsAt"],
        entries,
    );
    add("/api/v3/userlogs", Api::V3, &["userId", "date"], logs);
    add(
        "/api/v3/timmitimesheets",
        Api::V3,
        &["ownerId", "startsOn"],
        sheets,
    );
    add(
        "/work-locations/public/api/user-locations",
        Api::V4,
        &[],
        places,
    );

    let Expenses {
        claims,
        items,
        drafts,
        receipts,
    } = expenses(&owners, today);
    add("/api/v3/expenseClaims", Api::V3, &["ownerId"], claims);
    add(
        "/api/v3/expenseClaimItems",
        Api::V3,
        &["expenseClaimId", "purchasedOn"],
        items,
    );
    add(
        "/api/v3/expenseTempItems",
        Api::V3,
        &["ownerId", "purchasedOn"],
        drafts,
    );
    add("/api/v3/expenseReceipts", Api::V3, &["ownerId"], receipts);
    Derived { served }
}

/// `n` time entries (benchmarks: a large endpoint besides users): the
/// owners take turns, one workday each, going back from yesterday.
fn many_time_entries(owners: &[Owner], today: i64, n: u32) -> Vec<Value> {
    let count = owners.len().max(1) as u64;
    (0..u64::from(n))
        .map(|i| {
            let owner = owners.get((i % count) as usize).map_or(1, |o| o.id);
            let day = today - 1 - (i / count) as i64;
            json!({
                "id": i + 1,
                "ownerId": owner,
                "startsAt": format!("{}T{:02}:00:00", ymd(day), 8 + h(owner, i, 7) % 4),
                "duration": if h(owner, i, 2).is_multiple_of(4) { 8.0 } else { 7.5 },
                "axisSectionId": 1 + h(owner, i, 3) % 8,
                "comment": if h(owner, i, 8).is_multiple_of(5) { Value::Null } else { json!(format!("Projet {}", 1 + h(owner, i, 9) % 40)) },
            })
        })
        .collect()
}

/// Leaves (one record per half day) and the requests behind them: three
/// absences a year per owner from 2020 to a year ahead, within the owner's
/// contract.
fn leaves(owners: &[Owner], today: i64) -> (Vec<Value>, Vec<Value>) {
    let mut leaves = Vec::new();
    let mut requests = Vec::new();
    let (this_year, _, _) = civil_from_days(today);
    for o in owners {
        for year in 2020..=this_year + 1 {
            let jan1 = days_from_civil(year, 1, 1);
            let period = o.id * 100 + (year - 2000) as u64;
            for k in 0..3u64 {
                let start = jan1 + (h(o.id, year as u64, k) % 350) as i64;
                let days = 1 + (h(o.id, year as u64, k + 10) % 5) as i64;
                let end = start + days - 1;
                if start < o.start_day || o.end_day.is_some_and(|e| end > e) || start > today + 365
                {
                    continue;
                }
                let account = 1 + h(o.id, year as u64, k + 20) % LEAVE_TYPES.len() as u64;
                let cancelled = h(o.id, year as u64, k + 30).is_multiple_of(20);
                let status = if cancelled {
                    "cancelled"
                } else if start > today {
                    "pending"
                } else {
                    "approved"
                };
                let request = requests.len() + 1;
                requests.push(json!({
                    "id": request,
                    "ownerId": o.id,
                    "startDate": fmt_day(start),
                    "endDate": fmt_day(end),
                    "status": status,
                    "leaveAccountId": account,
                    "creationDate": fmt_day(start - 20),
                }));
                for d in start..=end {
                    for is_am in [true, false] {
                        leaves.push(json!({
                            "id": leaves.len() + 1,
                            "date": fmt_day(d),
                            "isAM": is_am,
                            "isActive": !cancelled,
                            "value": 0.5,
                            "leavePeriod": {
                                "id": period,
                                "ownerId": o.id,
                                "owner": {"id": o.id, "name": o.name,
                                          "departmentId": o.department},
                            },
                            "leaveAccount": {
                                "id": account,
                                "name": LEAVE_TYPES[(account - 1) as usize],
                            },
                            "leaveRequestId": request,
                        }));
                    }
                }
            }
        }
    }
    (leaves, requests)
}

/// The expense endpoints' records.
struct Expenses {
    claims: Vec<Value>,
    items: Vec<Value>,
    /// Items not yet in a claim (`expenseTempItems`).
    drafts: Vec<Value>,
    /// One receipt per claimed item.
    receipts: Vec<Value>,
}

/// Three expense claims per owner in the last months, with 1 to 4 items
/// each (a claim's total is the sum of its items, each item has a
/// receipt), and a draft item for every other owner.
fn expenses(owners: &[Owner], today: i64) -> Expenses {
    let mut claims = Vec::new();
    let mut items = Vec::new();
    let mut drafts = Vec::new();
    let mut receipts = Vec::new();
    for o in owners.iter().filter(|o| o.start_day <= today - 100) {
        for k in 0..3u64 {
            let claim = claims.len() + 1;
            let created = today - 90 + 30 * k as i64;
            let currency = if o.legal_entity == 2 { "CHF" } else { "EUR" };
            let mut cents_total = 0u64;
            for j in 0..1 + h(o.id, k, 40) % 4 {
                let cents = 500 + h(o.id, k * 8 + j, 41) % 20_000;
                cents_total += cents;
                let nature = 1 + h(o.id, k * 8 + j, 42) % NATURES.len() as u64;
                items.push(json!({
                    "id": items.len() + 1,
                    "expenseClaimId": claim,
                    "expenseNatureId": nature,
                    "purchasedOn": fmt_day(created - 1 - (j as i64)),
                    "amount": cents as f64 / 100.0,
                    "currency": currency,
                    "comment": NATURES[(nature - 1) as usize],
                }));
                receipts.push(json!({
                    "id": receipts.len() + 1,
                    "ownerId": o.id,
                    "name": format!("ticket-{}.jpg", items.len()),
                    "createdOn": fmt_day(created - 1 - (j as i64)),
                }));
            }
            let (y, m, _) = civil_from_days(created);
            claims.push(json!({
                "id": claim,
                "ownerId": o.id,
                "name": format!("Note de frais {m:02}/{y}"),
                "status": if k == 2 { "pending" } else { "paid" },
                "totalAmount": cents_total as f64 / 100.0,
                "currency": currency,
                "creationDate": fmt_day(created),
            }));
        }
        if o.id % 2 == 0 {
            let nature = 1 + h(o.id, 99, 43) % NATURES.len() as u64;
            drafts.push(json!({
                "id": drafts.len() + 1,
                "ownerId": o.id,
                "expenseNatureId": nature,
                "purchasedOn": fmt_day(today - 2),
                "amount": (500 + h(o.id, 99, 44) % 20_000) as f64 / 100.0,
                "currency": if o.legal_entity == 2 { "CHF" } else { "EUR" },
                "comment": NATURES[(nature - 1) as usize],
            }));
        }
    }
    Expenses {
        claims,
        items,
        drafts,
        receipts,
    }
}
