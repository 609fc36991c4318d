//! The fake tenant's data: hand-written fixtures, the deterministic synthetic
//! generator, and the compact per-record index that lets the endpoints
//! filter, count and page a million users without materialising them.

use std::collections::{HashMap, HashSet};
use std::io;

use serde_json::{Map, Value, json};

use super::{Mutation, UserData};

/// Milliseconds in a day.
pub(crate) const MS_PER_DAY: i64 = 86_400_000;
/// Marker of a synthetic record in [`Meta::fixture`].
pub(crate) const SYNTHETIC: u32 = u32::MAX;
/// Marker of an absent `modifiedAt` in [`Meta::modified_ms`].
pub(crate) const NO_DATE: i64 = i64::MIN;

const FIXTURE_USERS: &str = include_str!("../../fixtures/users.json");
const FIXTURE_DEPARTMENTS: &str = include_str!("../../fixtures/departments.json");

/// What the endpoints need to know about a record to filter, count and page
/// it, without building the record itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub id: u32,
    /// `dtContractEnd` is in the past (users only).
    pub former: bool,
    /// Index into [`Collection::records`], or [`SYNTHETIC`].
    pub fixture: u32,
    /// `modifiedAt` as naive milliseconds since 1970-01-01, or [`NO_DATE`].
    pub modified_ms: i64,
}

/// One collection (users or departments): its index sorted by id, and the
/// fixture records the index points into.
#[derive(Debug, Default)]
pub(crate) struct Collection {
    pub metas: Vec<Meta>,
    pub records: Vec<Map<String, Value>>,
    /// `former_before[i]` = former employees among `metas[..i]` (length
    /// `metas.len() + 1`), to count and skip without scanning.
    former_before: Vec<u32>,
}

impl Collection {
    pub fn new(metas: Vec<Meta>, records: Vec<Map<String, Value>>) -> Collection {
        let mut c = Collection {
            metas,
            records,
            former_before: Vec::new(),
        };
        c.refresh();
        c
    }

    /// Recomputes the derived index after `metas` changed.
    pub fn refresh(&mut self) {
        self.former_before.clear();
        self.former_before.reserve(self.metas.len() + 1);
        let mut n = 0u32;
        self.former_before.push(0);
        for m in &self.metas {
            n += u32::from(m.former);
            self.former_before.push(n);
        }
    }

    /// Records in `metas[a..b]`, former employees excluded when `exclude_former`.
    pub fn matching(&self, a: usize, b: usize, exclude_former: bool) -> usize {
        let (fa, fb) = (self.former_before[a], self.former_before[b]);
        if exclude_former {
            (b - a) - (fb - fa) as usize
        } else {
            b - a
        }
    }

    /// The meta of record `id`, if it exists.
    pub fn get(&self, id: u32) -> Option<&Meta> {
        self.metas
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .and_then(|i| self.metas.get(i))
    }
}

/// Everything the server serves.
#[derive(Debug)]
pub(crate) struct Store {
    pub users: Collection,
    pub departments: Collection,
    pub generator: Generator,
    /// Number of establishments of the v4 endpoint (ids `1..=establishments`).
    pub establishments: u32,
}

impl Store {
    /// Builds the data of a tenant; `today` (days since 1970-01-01) decides
    /// who is a former employee.
    pub fn build(data: &UserData, today: i64) -> io::Result<Store> {
        match data {
            UserData::Fixtures => Self::from_fixtures(today),
            UserData::Synthetic(n) => Ok(Self::synthetic(*n, today)),
        }
    }

    fn from_fixtures(today: i64) -> io::Result<Store> {
        let users = parse_records(FIXTURE_USERS, "fixtures/users.json")?;
        let departments = parse_records(FIXTURE_DEPARTMENTS, "fixtures/departments.json")?;
        let users = index_records(users, today, "fixtures/users.json")?;
        let departments = index_records(departments, today, "fixtures/departments.json")?;
        let dept_list = departments
            .metas
            .iter()
            .filter_map(|m| departments.records.get(m.fixture as usize))
            .map(|r| (id_of(r).unwrap_or(0), string_of(r, "name")))
            .collect();
        let fixture_names: HashMap<u32, String> = users
            .records
            .iter()
            .filter_map(|r| Some((id_of(r)?, string_of(r, "name"))))
            .collect();
        let manager_pool = users
            .metas
            .iter()
            .filter(|m| !m.former)
            .map(|m| m.id)
            .collect();
        let base_max = users.metas.last().map_or(0, |m| m.id);
        let establishments = establishment_count(users.metas.len());
        Ok(Store {
            users,
            departments,
            generator: Generator {
                departments: dept_list,
                base_max,
                manager_pool,
                fixture_names,
            },
            establishments,
        })
    }

    fn synthetic(n: u32, today: i64) -> Store {
        let dept_list: Vec<(u32, String)> = SYNTH_DEPARTMENTS
            .iter()
            .enumerate()
            .map(|(i, name)| (i as u32 + 1, (*name).to_owned()))
            .collect();
        let generator = Generator {
            departments: dept_list,
            base_max: n,
            manager_pool: Vec::new(),
            fixture_names: HashMap::new(),
        };
        let metas = (1..=n)
            .map(|id| {
                let core = generator.core(id);
                Meta {
                    id,
                    former: core.end_day.is_some_and(|d| d < today),
                    fixture: SYNTHETIC,
                    modified_ms: core.modified_ms,
                }
            })
            .collect();
        let departments = synthetic_departments(&generator, n);
        Store {
            users: Collection::new(metas, Vec::new()),
            departments,
            generator,
            establishments: establishment_count(n as usize),
        }
    }

    /// Applies a [`Mutation`]: deletes the listed users, marks the touched
    /// ones modified `now_ms`, then inserts new current employees with ids
    /// above every id ever served, modified `now_ms`.
    pub fn apply(&mut self, mutation: &Mutation, now_ms: i64) {
        let doomed: HashSet<u32> = mutation.delete.iter().copied().collect();
        self.users.metas.retain(|m| !doomed.contains(&m.id));
        for meta in &mut self.users.metas {
            if mutation.touch.contains(&meta.id) {
                meta.modified_ms = now_ms;
            }
        }
        let max = self
            .users
            .metas
            .last()
            .map_or(0, |m| m.id)
            .max(self.generator.base_max);
        for k in 1..=mutation.insert {
            let Some(id) = max.checked_add(k) else { break };
            self.users.metas.push(Meta {
                id,
                former: false,
                fixture: SYNTHETIC,
                modified_ms: now_ms,
            });
        }
        self.users.refresh();
    }

    /// The whole record of user `meta`, with relative `url`s (for the
    /// `/lucca-api` endpoint, which reshapes it).
    pub fn user_record(&self, meta: &Meta) -> Map<String, Value> {
        if let Some(r) = self.users.records.get(meta.fixture as usize) {
            return r.clone();
        }
        let core = self.generator.core(meta.id);
        let culture_key = core.culture_key();
        USER_KEYS
            .iter()
            .map(|k| if *k == "cultureID" { culture_key } else { k })
            .map(|k| {
                (
                    k.to_owned(),
                    self.generator.field(&core, meta.modified_ms, k).to_value(),
                )
            })
            .collect()
    }
}

/// At least 3 establishments, one per 40 users.
fn establishment_count(users: usize) -> u32 {
    u32::try_from(users / 40).unwrap_or(u32::MAX).max(3)
}

fn parse_records(text: &str, file: &str) -> io::Result<Vec<Map<String, Value>>> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{file}: {e}")))?;
    let Value::Array(items) = value else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{file}: expected a JSON array of records"),
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Object(m) => Ok(m),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{file}: record #{i} is not an object"),
            )),
        })
        .collect()
}

fn index_records(
    records: Vec<Map<String, Value>>,
    today: i64,
    file: &str,
) -> io::Result<Collection> {
    let mut metas = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let id = id_of(r).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{file}: record #{i} has no integer id"),
            )
        })?;
        let modified_ms = r
            .get("modifiedAt")
            .or_else(|| r.get("modifiedOn"))
            .and_then(Value::as_str)
            .and_then(parse_naive_ms)
            .unwrap_or(NO_DATE);
        let former = r
            .get("dtContractEnd")
            .and_then(Value::as_str)
            .and_then(parse_naive_ms)
            .is_some_and(|ms| ms.div_euclid(MS_PER_DAY) < today);
        metas.push(Meta {
            id,
            former,
            fixture: i as u32,
            modified_ms,
        });
    }
    metas.sort_by_key(|m| m.id);
    if metas.windows(2).any(|w| w[0].id == w[1].id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{file}: duplicate ids"),
        ));
    }
    Ok(Collection::new(metas, records))
}

fn id_of(r: &Map<String, Value>) -> Option<u32> {
    r.get("id")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

fn string_of(r: &Map<String, Value>, key: &str) -> String {
    r.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------- dates

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date (year, month, day) of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DDT00:00:00` of a day count.
pub(crate) fn fmt_day(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}T00:00:00")
}

/// Naive `YYYY-MM-DDTHH:MM:SS[.mmm]` of naive milliseconds since 1970;
/// the fraction is written only when it is not zero.
pub(crate) fn fmt_ms(ms: i64) -> String {
    let day = ms.div_euclid(MS_PER_DAY);
    let rest = ms.rem_euclid(MS_PER_DAY);
    let (y, mo, d) = civil_from_days(day);
    let (h, mi, s, frac) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    if frac == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}")
    }
}

/// Parses a naive datetime the way Lucca writes them and clients send them:
/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fraction]]` (a space instead of `T`
/// and a trailing `Z` are tolerated). Fractions beyond milliseconds are
/// truncated. Returns naive milliseconds since 1970-01-01.
pub(crate) fn parse_naive_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let y: i64 = num(dp.next()?, 4)?;
    let m: u32 = num(dp.next()?, 2)?;
    let d: u32 = num(dp.next()?, 2)?;
    if dp.next().is_some() || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let mut ms = days_from_civil(y, m, d) * MS_PER_DAY;
    if let Some(time) = time {
        let (hms, frac) = match time.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (time, None),
        };
        let mut tp = hms.split(':');
        let h: i64 = num(tp.next()?, 2)?;
        let mi: i64 = num(tp.next()?, 2)?;
        let sec: i64 = match tp.next() {
            Some(x) => num(x, 2)?,
            None => 0,
        };
        if tp.next().is_some() || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        ms += ((h * 60 + mi) * 60 + sec) * 1000;
        if let Some(frac) = frac {
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            ms += digits.parse::<i64>().ok()?;
        }
    }
    Some(ms)
}

fn num<T: std::str::FromStr>(s: &str, width: usize) -> Option<T> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

// ---------------------------------------------------------------- synthetic

/// Top-level keys of a v3 user, in the order Lucca documents them.
/// `cultureID` is spelled `cultureId` on some users (see [`Core::culture_key`]).
pub(crate) const USER_KEYS: [&str; 23] = [
    "id",
    "name",
    "url",
    "displayName",
    "modifiedAt",
    "lastName",
    "firstName",
    "login",
    "mail",
    "dtContractStart",
    "dtContractEnd",
    "birthDate",
    "employeeNumber",
    "calendarId",
    "cultureID",
    "legalEntityId",
    "departmentId",
    "department",
    "managerId",
    "manager",
    "rolePrincipalId",
    "userWorkCycles",
    "extendedData",
];

const FIRST_NAMES: [&str; 32] = [
    "Camille",
    "Lucas",
    "Léa",
    "Hugo",
    "Chloé",
    "Louis",
    "Manon",
    "Gabriel",
    "Inès",
    "Jules",
    "Zoë",
    "Łukasz",
    "Ольга",
    "太郎",
    "Søren",
    "Anaïs",
    "José",
    "Ümit",
    "Nour",
    "François",
    "Hélène",
    "Mateusz",
    "Αλέξανδρος",
    "Émilie",
    "Thomas",
    "Sophie",
    "Aïcha",
    "Bjørn",
    "Marie-Claire",
    "Wei",
    "Priya",
    "Oliver",
];

const LAST_NAMES: [&str; 32] = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Dupont-Lefèvre",
    "Wiśniewski",
    "Иванова",
    "山田",
    "Østergaard",
    "Nguyễn",
    "Núñez",
    "Öztürk",
    "El-Amrani",
    "Lemaître",
    "Kowalczyk",
    "Παπαδόπουλος",
    "O'Neill",
    "Müller",
    "García",
    "Rossi",
    "Haddad",
    "Faure",
    "Schmidt",
    "Silva",
    "Chen",
    "Patel",
];

/// The fixed department set of synthetic tenants (ids 1..=12).
pub(crate) const SYNTH_DEPARTMENTS: [&str; 12] = [
    "Direction générale",
    "Ressources humaines",
    "Finance & Contrôle",
    "R&D Plateforme",
    "R&D Produit",
    "Ventes France",
    "Ventes DACH",
    "Marketing",
    "Support client",
    "Opérations",
    "Juridique",
    "Qualité & Sécurité",
];

const CULTURES: [u32; 11] = [
    1036, 1036, 1036, 1036, 1036, 1033, 2057, 1031, 1045, 1049, 1041,
];
const BLOOD_TYPES: [&str; 8] = ["A+", "A-", "B+", "B-", "AB", "AB-", "O+", "O-"];
const SIZES: [&str; 5] = ["XS", "S", "M", "L", "XL"];
const ROLES: [u32; 5] = [55, 55, 55, 12, 56];
const SEED: u64 = 0x6C75_6363_6153_594E; // "luccaSYN"

/// splitmix64: a tiny, well-mixed, portable hash (same output everywhere).
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Independent pseudo-random lane `lane` of user `id`.
fn lane(id: u32, lane: u64) -> u64 {
    splitmix64(splitmix64(u64::from(id) ^ SEED) ^ lane.wrapping_mul(0xA24B_AED4_963E_E407))
}

fn pick<T: Copy>(items: &[T], h: u64) -> T {
    items[(h % items.len() as u64) as usize]
}

/// Makes synthetic users (and the users a [`Mutation`] inserts).
#[derive(Debug)]
pub(crate) struct Generator {
    /// `(id, name)` of the departments users are spread over.
    pub departments: Vec<(u32, String)>,
    /// Highest id of the initial data: users above it were inserted later
    /// and are always current employees.
    pub base_max: u32,
    /// Managers of inserted users on a fixture tenant; empty on a synthetic
    /// tenant, where the manager of user `id` is an earlier user.
    pub manager_pool: Vec<u32>,
    /// Names of fixture users, for manager references.
    pub fixture_names: HashMap<u32, String>,
}

/// The variable facts of one synthetic user, cheap to compute from its id.
#[derive(Clone, Debug)]
pub(crate) struct Core {
    pub id: u32,
    pub first: &'static str,
    pub last: &'static str,
    pub start_day: i64,
    pub end_day: Option<i64>,
    pub birth_day: Option<i64>,
    pub modified_ms: i64,
    /// Index into [`Generator::departments`].
    pub department: Option<usize>,
    pub manager: Option<u32>,
    h: u64,
}

impl Core {
    /// `cultureId` on one user in 20, `cultureID` on the others.
    pub fn culture_key(&self) -> &'static str {
        if self.h % 20 == 7 {
            "cultureId"
        } else {
            "cultureID"
        }
    }

    /// `first last`.
    pub fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// First and last name of synthetic user `id`.
fn synth_names(id: u32) -> (&'static str, &'static str) {
    (
        pick(&FIRST_NAMES, lane(id, 1)),
        pick(&LAST_NAMES, lane(id, 2)),
    )
}

impl Generator {
    /// The facts of synthetic user `id`.
    pub fn core(&self, id: u32) -> Core {
        let (first, last) = synth_names(id);
        let h = lane(id, 0);
        let start_lo = days_from_civil(2005, 1, 1);
        let start_hi = days_from_civil(2024, 12, 31);
        let start_day = start_lo + (lane(id, 3) % (start_hi - start_lo + 1) as u64) as i64;
        let kind = lane(id, 4) % 20;
        let end_day = if id > self.base_max {
            None
        } else if kind < 2 {
            // ~10 % former employees, who left before 2025.
            Some(start_day + 1 + (lane(id, 5) % (start_hi - start_day).max(1) as u64) as i64)
        } else if kind == 2 {
            // ~5 % fixed-term contracts ending in the future.
            Some(days_from_civil(2031, 8, 31))
        } else {
            None
        };
        let birth_day = if lane(id, 6).is_multiple_of(23) {
            None
        } else {
            let lo = days_from_civil(1960, 1, 1);
            Some(lo + (lane(id, 7) % (44 * 365)) as i64)
        };
        let mod_lo = start_day.max(days_from_civil(2019, 1, 1)) * MS_PER_DAY;
        let mod_hi = days_from_civil(2025, 6, 30) * MS_PER_DAY;
        let span = (mod_hi - mod_lo).max(1) as u64;
        let raw = mod_lo + (lane(id, 8) % span) as i64;
        // About half of the timestamps carry milliseconds.
        let modified_ms = if lane(id, 9).is_multiple_of(2) {
            raw - raw.rem_euclid(1000)
        } else {
            raw
        };
        let department = (!self.departments.is_empty())
            .then(|| (lane(id, 10) % self.departments.len() as u64) as usize);
        let manager = self.manager_of(id, lane(id, 11));
        Core {
            id,
            first,
            last,
            start_day,
            end_day,
            birth_day,
            modified_ms,
            department,
            manager,
            h,
        }
    }

    fn manager_of(&self, id: u32, h: u64) -> Option<u32> {
        if !self.manager_pool.is_empty() {
            return Some(pick(&self.manager_pool, h)).filter(|m| *m != id);
        }
        if id <= 1 || h.is_multiple_of(97) {
            return None;
        }
        // Managers are among the first tenth of earlier users.
        let span = u64::from(((id - 1) / 10).max(1));
        Some(1 + (h % span) as u32)
    }

    /// The display name of user `id` (fixture or synthetic).
    pub fn name_of(&self, id: u32) -> String {
        match self.fixture_names.get(&id) {
            Some(n) => n.clone(),
            None => {
                let (f, l) = synth_names(id);
                format!("{f} {l}")
            }
        }
    }

    /// The value of top-level field `key` of a synthetic user (urls relative).
    pub fn field(&self, c: &Core, modified_ms: i64, key: &str) -> Node {
        let id = c.id;
        let day = |d: i64| Node::Str(fmt_day(d));
        let opt_day = |d: Option<i64>| d.map_or(Node::Null, day);
        match key {
            "id" => Node::Int(id.into()),
            "name" => Node::Str(c.name()),
            "url" => Node::Str(format!("/api/users/{id}")),
            "displayName" => Node::Str(format!("{} {}", c.last, c.first)),
            "modifiedAt" if modified_ms != NO_DATE => Node::Str(fmt_ms(modified_ms)),
            "lastName" => Node::Static(c.last),
            "firstName" => Node::Static(c.first),
            "login" => Node::Str(login(c)),
            "mail" if c.h % 31 != 3 => Node::Str(format!("{}@acme-rh.example", login(c))),
            "dtContractStart" => day(c.start_day),
            "dtContractEnd" => opt_day(c.end_day),
            "birthDate" => opt_day(c.birth_day),
            "employeeNumber" if c.h % 41 != 5 => Node::Str(format!("{id:05}")),
            "calendarId" => Node::Int(1 + c.h % 2),
            "cultureID" | "cultureId" => Node::Int(pick(&CULTURES, c.h >> 8).into()),
            "legalEntityId" => Node::Int(1 + (c.h >> 16) % 2),
            "departmentId" => self
                .department(c)
                .map_or(Node::Null, |(did, _)| Node::Int(did.into())),
            "department" => self.department(c).map_or(Node::Null, |(did, name)| {
                Node::Obj(vec![
                    ("id", Node::Int(did.into())),
                    ("name", Node::Str(name.to_owned())),
                    ("url", Node::Str(format!("/api/departments/{did}"))),
                ])
            }),
            "managerId" => c.manager.map_or(Node::Null, |m| Node::Int(m.into())),
            "manager" => c.manager.map_or(Node::Null, |m| {
                Node::Obj(vec![
                    ("id", Node::Int(m.into())),
                    ("name", Node::Str(self.name_of(m))),
                    ("url", Node::Str(format!("/api/users/{m}"))),
                ])
            }),
            "rolePrincipalId" => Node::Int(pick(&ROLES, c.h >> 24).into()),
            "userWorkCycles" => {
                let cycle = |n: u32, starts: Node, ends: Node| {
                    Node::Obj(vec![
                        ("id", Node::Int(u64::from(id) * 2 + u64::from(n))),
                        ("ownerID", Node::Int(id.into())),
                        ("workCycleID", Node::Int(1 + (c.h >> (32 + n)) % 6)),
                        ("startsOn", starts),
                        ("endsOn", ends),
                    ])
                };
                match (c.h >> 40) % 7 {
                    0 => Node::Arr(Vec::new()),
                    1 => {
                        let switch = c.start_day + 365;
                        Node::Arr(vec![
                            cycle(0, day(c.start_day), day(switch - 1)),
                            cycle(1, day(switch), opt_day(c.end_day)),
                        ])
                    }
                    _ => Node::Arr(vec![cycle(0, day(c.start_day), opt_day(c.end_day))]),
                }
            }
            "extendedData" => match (c.h >> 48) % 3 {
                0 => Node::Obj(Vec::new()),
                1 => Node::Obj(vec![(
                    "e_bloodType",
                    Node::Static(pick(&BLOOD_TYPES, c.h >> 52)),
                )]),
                _ => {
                    let k = (c.h >> 52) % SIZES.len() as u64;
                    Node::Obj(vec![(
                        "e_tshirt",
                        Node::Obj(vec![
                            ("id", Node::Int(k + 1)),
                            ("name", Node::Static(SIZES[k as usize])),
                        ]),
                    )])
                }
            },
            _ => Node::Null,
        }
    }

    /// `(id, name)` of the department of a synthetic user.
    fn department(&self, c: &Core) -> Option<(u32, &str)> {
        c.department
            .and_then(|i| self.departments.get(i))
            .map(|(id, name)| (*id, name.as_str()))
    }
}

/// A JSON value of a synthetic record, cheaper to build than a
/// `serde_json::Value` (static keys, no maps).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Int(u64),
    Str(String),
    Static(&'static str),
    Obj(Vec<(&'static str, Node)>),
    Arr(Vec<Node>),
}

impl Node {
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Int(i) => json!(i),
            Node::Str(s) => Value::String(s.clone()),
            Node::Static(s) => Value::String((*s).to_owned()),
            Node::Obj(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_value()))
                    .collect(),
            ),
            Node::Arr(items) => Value::Array(items.iter().map(Node::to_value).collect()),
        }
    }
}

/// An ASCII login unique per user: initial of the first name, the last name,
/// the id (`cmartin42`); `user42` when the names have no Latin letters.
fn login(c: &Core) -> String {
    let first = ascii_fold(c.first);
    let last = ascii_fold(c.last);
    if first.is_empty() && last.is_empty() {
        return format!("user{}", c.id);
    }
    let initial: String = first.chars().take(1).collect();
    format!("{initial}{last}{}", c.id)
}

fn ascii_fold(s: &str) -> String {
    s.chars()
        .filter_map(|c| {
            let c = c.to_lowercase().next().unwrap_or(c);
            let folded = match c {
                'a'..='z' | '0'..='9' => c,
                'à' | 'â' | 'ä' | 'á' | 'ã' | 'å' => 'a',
                'é' | 'è' | 'ê' | 'ë' | 'ễ' | 'ę' => 'e',
                'î' | 'ï' | 'í' | 'ì' => 'i',
                'ô' | 'ö' | 'ó' | 'ò' | 'ø' | 'õ' => 'o',
                'ù' | 'û' | 'ü' | 'ú' => 'u',
                'ç' | 'ć' => 'c',
                'ł' => 'l',
                'ś' => 's',
                'ñ' | 'ń' => 'n',
                'ÿ' => 'y',
                _ => return None,
            };
            Some(folded)
        })
        .collect()
}

fn synthetic_departments(generator: &Generator, users: u32) -> Collection {
    let records: Vec<Map<String, Value>> = generator
        .departments
        .iter()
        .enumerate()
        .map(|(i, (id, name))| {
            let head = (*id <= users).then_some(*id);
            let parent = (*id > 1).then_some(1u32);
            let value = json!({
                "id": id,
                "name": name,
                "url": format!("/api/departments/{id}"),
                "code": format!("D{id:02}"),
                "hierarchy": if *id == 1 { "/1/".to_owned() } else { format!("/1/{id}/") },
                "parentId": parent,
                "isActive": true,
                "level": if *id == 1 { 0 } else { 1 },
                "sortOrder": i + 1,
                "headID": head,
                "head": head.map(|h| json!({
                    "id": h,
                    "name": generator.name_of(h),
                    "url": format!("/api/users/{h}"),
                })),
            });
            match value {
                Value::Object(m) => m,
                _ => Map::new(),
            }
        })
        .collect();
    let metas = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            Some(Meta {
                id: id_of(r)?,
                former: false,
                fixture: i as u32,
                modified_ms: NO_DATE,
            })
        })
        .collect();
    Collection::new(metas, records)
}
