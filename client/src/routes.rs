//! Route cards: where a warning can go next.
//!
//! Every warning a member posts names a kind of behaviour ([`KINDS`]). A
//! route file (TOML, kept in the repository with its sources, so that a
//! community elsewhere can ship its own) lists the bodies that deal with each
//! kind: what each is for, how to contact it, and any deadline counted from
//! the date of the behaviour. [`Routes::card`] renders those routes for one
//! warning as plain text, with each deadline worked out and marked "passed" or
//! "N days left"; [`Routes::card_data`] gives the same as serializable data.
//!
//! [`Routes::builtin`] is the UK Parliament file, `routes/uk-parliament.toml`.
//!
//! Dates are a small [`Date`] type (no date crate): proleptic Gregorian,
//! counted in days from 1970-01-01, with month arithmetic that follows the
//! "corresponding date" rule UK courts use for periods of months (see
//! [`Date::add`]).
//!
//! This module does no I/O except [`Routes::load`] and reads the clock only in
//! [`today`].

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The kinds of behaviour a warning can be about, as the string ids used in
/// warnings, route files and the CLI.
pub const KINDS: [&str; 5] = [
    "harassment",
    "sexual-misconduct",
    "bullying",
    "inappropriate-conduct",
    "other",
];

/// Whether `kind` is one of [`KINDS`].
pub fn is_kind(kind: &str) -> bool {
    KINDS.contains(&kind)
}

/// The UK Parliament route file, embedded at build time.
const BUILTIN: &str = include_str!("../../routes/uk-parliament.toml");

/// Earliest year a [`Date`] can hold; arithmetic saturates here.
const MIN_YEAR: i64 = 0;
/// Latest year a [`Date`] can hold; arithmetic saturates here.
const MAX_YEAR: i64 = 9999;

// ---------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------

/// A calendar day (proleptic Gregorian, years 0000 to 9999).
///
/// Always valid: build one with [`Date::new`] or parse one with
/// [`Date::parse`]. Ordered by time. Serialized as `"YYYY-MM-DD"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u32,
    day: u32,
}

/// Why a date was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a date: {problem} (use YYYY-MM-DD, or YYYY-MM for a month)")]
pub struct DateError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Date {
    /// The date `year-month-day`, or `None` if there is no such day.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        let ok = (MIN_YEAR..=MAX_YEAR).contains(&i64::from(year))
            && (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day);
        ok.then_some(Date { year, month, day })
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month, 1 to 12.
    pub fn month(self) -> u32 {
        self.month
    }

    /// The day of the month, from 1.
    pub fn day(self) -> u32 {
        self.day
    }

    /// Parses `YYYY-MM-DD`, or `YYYY-MM` for a whole month, which gives the
    /// month's **first** day: the earliest day it allows, so that deadlines
    /// counted from it are the earliest they could be. Use
    /// [`GivenDate::parse`] to keep track of which form was given.
    pub fn parse(s: &str) -> Result<Date, DateError> {
        GivenDate::parse(s).map(|g| g.date)
    }

    /// Days since 1970-01-01 (negative before it).
    pub fn days_since_epoch(self) -> i64 {
        days_from_civil(i64::from(self.year), self.month, self.day)
    }

    /// The date `days` days after 1970-01-01 (before it if negative),
    /// saturating at 0000-01-01 and 9999-12-31.
    pub fn from_days_since_epoch(days: i64) -> Date {
        // Far outside the range anyway; keeps the arithmetic from overflowing.
        const LIMIT: i64 = 1 << 40;
        let (year, month, day) = civil_from_days(days.clamp(-LIMIT, LIMIT));
        if year < MIN_YEAR {
            Date {
                year: MIN_YEAR as i32,
                month: 1,
                day: 1,
            }
        } else if year > MAX_YEAR {
            Date {
                year: MAX_YEAR as i32,
                month: 12,
                day: 31,
            }
        } else {
            // In range by the checks above.
            Date {
                year: year as i32,
                month,
                day,
            }
        }
    }

    /// This date moved by `days` days (back if negative).
    pub fn add_days(self, days: i64) -> Date {
        Date::from_days_since_epoch(self.days_since_epoch().saturating_add(days))
    }

    /// Days from `self` to `later` (negative if `later` is earlier).
    pub fn days_until(self, later: Date) -> i64 {
        later.days_since_epoch() - self.days_since_epoch()
    }

    /// This date moved by `months` calendar months and `days` days, counted
    /// the way UK courts count periods of months (the "corresponding date"
    /// rule):
    ///
    /// - The month moves by `months`, keeping the day number. If that month
    ///   is too short, the day becomes its last day: 2024-01-31 + 1 month =
    ///   2024-02-29, 2023-01-31 + 1 month = 2023-02-28.
    /// - A negative `days` is taken off the day number *before* that clamp,
    ///   so a period "beginning with" a day (`months = 3, days = -1`, "3
    ///   months minus 1 day") ends on the day before the corresponding date,
    ///   or on the month's last day when there is no corresponding date:
    ///   2024-03-14 → 2024-06-13, 2025-03-01 → 2025-05-31, 2024-11-30 →
    ///   2025-02-28 (2023-11-30 → 2024-02-29). A day number below 1 counts
    ///   back into the month before.
    /// - A positive `days` is added after the clamp, as plain days.
    ///
    /// Clamping first and subtracting after (2024-11-30 + 3 months = Feb 28,
    /// minus 1 = Feb 27) would end such a period a day early: published
    /// guidance on tribunal time limits gives 28 February (29 in a leap
    /// year) for a dismissal on 30 November.
    ///
    /// Saturates at 0000-01-01 and 9999-12-31.
    pub fn add(self, months: i32, days: i32) -> Date {
        let index = i64::from(self.year) * 12 + i64::from(self.month) - 1 + i64::from(months);
        let year = index.div_euclid(12);
        // `rem_euclid(12)` is 0..=11.
        let month = (index.rem_euclid(12) + 1) as u32;
        if year < MIN_YEAR {
            return Date::from_days_since_epoch(i64::MIN / 2);
        }
        if year > MAX_YEAR {
            return Date::from_days_since_epoch(i64::MAX / 2);
        }
        let year = year as i32;
        let len = i64::from(days_in_month(year, month));
        let first = days_from_civil(i64::from(year), month, 1);
        if days <= 0 {
            // Day number after the offset; may be < 1 (count back) or past
            // the month's end (clamp).
            let day = i64::from(self.day) + i64::from(days);
            Date::from_days_since_epoch(first + day.min(len) - 1)
        } else {
            let day = i64::from(self.day).min(len);
            Date::from_days_since_epoch(first + day - 1 + i64::from(days))
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl FromStr for Date {
    type Err = DateError;

    /// Same as [`Date::parse`].
    fn from_str(s: &str) -> Result<Date, DateError> {
        Date::parse(s)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Date, D::Error> {
        let s = String::deserialize(deserializer)?;
        Date::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How precisely a date was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// A day: `YYYY-MM-DD`.
    Day,
    /// A whole month: `YYYY-MM`, taken as the month's first day.
    Month,
}

/// A date as a member gave it: a day, or only a month (then `date` is the
/// month's first day, the earliest it allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GivenDate {
    /// The day deadlines are counted from.
    pub date: Date,
    /// Whether a day or only a month was given.
    pub precision: Precision,
}

impl GivenDate {
    /// Parses `YYYY-MM-DD` or `YYYY-MM` (surrounding spaces allowed).
    pub fn parse(s: &str) -> Result<GivenDate, DateError> {
        let err = |problem: &str| DateError {
            input: s.to_string(),
            problem: problem.to_string(),
        };
        let parts: Vec<&str> = s.trim().split('-').collect();
        let number = |part: &str, len: usize, what: &str| -> Result<u32, DateError> {
            if part.len() != len || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(&format!("the {what} must be {len} digits")));
            }
            part.parse::<u32>()
                .map_err(|_| err(&format!("the {what} is not a number")))
        };
        let (year, month, day, precision) = match parts.as_slice() {
            [y, m] => (
                number(y, 4, "year")?,
                number(m, 2, "month")?,
                1,
                Precision::Month,
            ),
            [y, m, d] => (
                number(y, 4, "year")?,
                number(m, 2, "month")?,
                number(d, 2, "day")?,
                Precision::Day,
            ),
            _ => return Err(err("expected YYYY-MM-DD or YYYY-MM")),
        };
        if !(1..=12).contains(&month) {
            return Err(err("there is no such month"));
        }
        // Four digits always fit an i32.
        let year = year as i32;
        let date =
            Date::new(year, month, day).ok_or_else(|| err("there is no such day in that month"))?;
        Ok(GivenDate { date, precision })
    }

    /// For a month-only date, a sentence saying which day deadlines are
    /// counted from; `None` for a full date.
    pub fn note(&self) -> Option<String> {
        match self.precision {
            Precision::Day => None,
            Precision::Month => Some(format!(
                "The date was given as a month ({:04}-{:02}), so deadlines are counted from \
                 {}, the earliest day it allows: each deadline shown is the earliest it could be.",
                self.date.year, self.date.month, self.date
            )),
        }
    }
}

impl From<Date> for GivenDate {
    fn from(date: Date) -> GivenDate {
        GivenDate {
            date,
            precision: Precision::Day,
        }
    }
}

impl FromStr for GivenDate {
    type Err = DateError;

    /// Same as [`GivenDate::parse`].
    fn from_str(s: &str) -> Result<GivenDate, DateError> {
        GivenDate::parse(s)
    }
}

/// Today's date in UTC, from the system clock.
pub fn today() -> Date {
    let secs = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    Date::from_days_since_epoch(secs.div_euclid(86_400))
}

/// Whether `year` is a Gregorian leap year.
fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` (1 to 12) of `year`.
fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 1970-01-01 to `year-month-day` (a valid date).
///
/// Counts in 400-year eras of 146 097 days, in years that start on 1 March so
/// that the leap day falls at the end (after H. Hinnant, "chrono-compatible
/// low-level date algorithms").
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = (month + 9) % 12; // March = 0 .. February = 11
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date `days` days after 1970-01-01, as (year, month, day): the inverse
/// of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // month is 1..=12 and day 1..=31, so both fit.
    (year, month as u32, day as u32)
}

// ---------------------------------------------------------------------------
// Route files
// ---------------------------------------------------------------------------

/// Why a route file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// The file could not be read.
    #[error("cannot read the route file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape (a syntax error, a missing
    /// field or a value of the wrong type); the message names the line.
    #[error("the route file is not valid: {0}")]
    Syntax(String),
    /// A key the format does not have.
    #[error("{place}: unknown key `{key}` (expected one of: {expected})")]
    UnknownKey {
        /// Where: the top level, `[meta]`, or a route (named by its id).
        place: String,
        /// The key.
        key: String,
        /// The keys allowed there.
        expected: String,
    },
    /// A field of `[meta]` has a value that is not allowed.
    #[error("[meta], field `{field}`: {problem}")]
    Meta {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A field of a route has a value that is not allowed.
    #[error("route `{route}`, field `{field}`: {problem}")]
    Route {
        /// The route's id, or `#N` (from 1) if it has none.
        route: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A kind of behaviour that is not one of [`KINDS`].
    #[error("unknown kind of behaviour `{0}` (known kinds: {kinds})", kinds = KINDS.join(", "))]
    UnknownKind(String),
}

/// The `[meta]` table of a route file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Whom the file is for, e.g. "UK Parliament: MPs' and peers' staff…".
    pub name: String,
    /// Where its law applies.
    pub jurisdiction: String,
    /// When its facts were last checked, `YYYY-MM-DD`.
    pub updated: String,
    /// Shown at the end of every card.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One body a warning can go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Short stable id, lower case with dashes (`acas`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The kinds of behaviour it deals with (from [`KINDS`]).
    pub kinds: Vec<String>,
    /// What it is for, in a sentence or two.
    pub purpose: String,
    /// How to contact it (phone numbers, addresses, as text).
    pub contact: String,
    /// Deadlines counted from the date of the behaviour, each for some of
    /// the route's kinds (a police time limit for summary offences is not
    /// one for sexual offences). Written as one `[route.deadline]` table
    /// (for every kind of the route) or as `[[route.deadline]]` tables with
    /// `kinds`; at most one per kind.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub deadline: Vec<DeadlineRule>,
    /// What to know about time when there is no fixed deadline (or beside
    /// one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_note: Option<String>,
    /// Official pages the entry is based on.
    pub source: Vec<String>,
}

/// A deadline as an offset from the date of the behaviour, or, for some
/// kinds, the statement that there is no time limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineRule {
    /// The kinds it is for (a subset of the route's); empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Calendar months after the date (0 to 1200).
    #[serde(default)]
    pub months: i32,
    /// Days added to the day number (-31 to 366); -1 for "… minus 1 day".
    #[serde(default)]
    pub days: i32,
    /// What the deadline is for.
    #[serde(default)]
    pub label: String,
    /// What the date is for in a few words, shown before it on the short
    /// card in `sotto warnings` ("summary offences"); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short: Option<String>,
    /// Set instead of `months`/`days`/`label` when these kinds have no time
    /// limit on this route: what to say, e.g. "sexual offences have no time
    /// limit". The card then shows no date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_limit: Option<String>,
}

/// A `deadline` written as one table or as an array of tables.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DeadlineRule>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(DeadlineRule),
        Many(Vec<DeadlineRule>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(rule) => vec![rule],
        OneOrMany::Many(rules) => rules,
    })
}

/// A deadline worked out for one date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deadline {
    /// The last day.
    pub date: Date,
    /// What the deadline is for.
    pub label: String,
    /// The rule, e.g. "3 months minus 1 day".
    pub rule: String,
}

impl DeadlineRule {
    /// The deadline for behaviour on `date` (see [`Date::add`]).
    pub fn apply(&self, date: Date) -> Date {
        date.add(self.months, self.days)
    }

    /// The offset in words: "3 months minus 1 day", "6 months", "14 days".
    pub fn describe(&self) -> String {
        let plural = |n: i64, one: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {one}s")
            }
        };
        let months = i64::from(self.months);
        let days = i64::from(self.days);
        match (months, days) {
            (m, 0) => plural(m, "month"),
            (0, d) if d > 0 => plural(d, "day"),
            (0, d) => format!("{} before", plural(-d, "day")),
            (m, d) if d > 0 => format!("{} plus {}", plural(m, "month"), plural(d, "day")),
            (m, d) => format!("{} minus {}", plural(m, "month"), plural(-d, "day")),
        }
    }
}

impl Deadline {
    /// Days from `today` to the deadline: 0 on the last day, negative once
    /// it has passed.
    pub fn days_left(&self, today: Date) -> i64 {
        today.days_until(self.date)
    }

    /// Whether the last day is before `today`.
    pub fn passed(&self, today: Date) -> bool {
        self.days_left(today) < 0
    }

    /// "passed", "last day today", "1 day left" or "N days left".
    pub fn status(&self, today: Date) -> String {
        status_text(self.days_left(today))
    }
}

/// "passed", "last day today", "1 day left", "N days left".
pub fn status_text(days_left: i64) -> String {
    match days_left {
        n if n < 0 => "passed".to_string(),
        0 => "last day today".to_string(),
        1 => "1 day left".to_string(),
        n => format!("{n} days left"),
    }
}

impl Route {
    /// Whether this route deals with `kind`.
    pub fn applies_to(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }

    /// The deadline rule (or no-limit statement) for `kind`, if any.
    pub fn rule_for(&self, kind: &str) -> Option<&DeadlineRule> {
        self.deadline
            .iter()
            .find(|r| r.kinds.is_empty() || r.kinds.iter().any(|k| k == kind))
    }

    /// The route's deadline for `kind` of behaviour on `date`, if it has
    /// one (none where the kind has no time limit).
    pub fn deadline_for(&self, kind: &str, date: Date) -> Option<Deadline> {
        self.rule_for(kind)
            .filter(|rule| rule.no_limit.is_none())
            .map(|rule| Deadline {
                date: rule.apply(date),
                label: rule.label.clone(),
                rule: rule.describe(),
            })
    }
}

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    meta: Meta,
    #[serde(default)]
    route: Vec<Route>,
}

const TOP_KEYS: &[&str] = &["meta", "route"];
const META_KEYS: &[&str] = &["name", "jurisdiction", "updated", "notes"];
const ROUTE_KEYS: &[&str] = &[
    "id",
    "name",
    "kinds",
    "purpose",
    "contact",
    "deadline",
    "deadline_note",
    "source",
];
const DEADLINE_KEYS: &[&str] = &["kinds", "months", "days", "label", "short", "no_limit"];

/// A validated route file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Routes {
    meta: Meta,
    routes: Vec<Route>,
}

impl Routes {
    /// The UK Parliament routes (`routes/uk-parliament.toml`, embedded).
    pub fn builtin() -> Routes {
        // The embedded file is checked by this module's tests.
        Routes::parse(BUILTIN).expect("the built-in route file is valid")
    }

    /// Reads and validates the route file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Routes, RoutesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| RoutesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Routes::parse(&text)
    }

    /// Parses and validates a route file's text.
    ///
    /// Refuses unknown keys, kinds not in [`KINDS`], duplicate ids, empty
    /// texts, sources that are not http(s) URLs, and deadline offsets out of
    /// range, with an error naming the route and field.
    pub fn parse(text: &str) -> Result<Routes, RoutesError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| RoutesError::Syntax(e.to_string()))?;
        check_keys(&table)?;
        let file: RouteFile =
            toml::from_str(text).map_err(|e| RoutesError::Syntax(e.to_string()))?;
        validate_meta(&file.meta)?;
        let mut seen: Vec<&str> = Vec::new();
        for (i, route) in file.route.iter().enumerate() {
            validate_route(i, route)?;
            if seen.contains(&route.id.as_str()) {
                return Err(RoutesError::Route {
                    route: route.id.clone(),
                    field: "id",
                    problem: "another route already has this id".to_string(),
                });
            }
            seen.push(&route.id);
        }
        if file.route.is_empty() {
            return Err(RoutesError::Syntax(
                "the file has no routes (add [[route]] tables)".to_string(),
            ));
        }
        Ok(Routes {
            meta: file.meta,
            routes: file.route,
        })
    }

    /// The `[meta]` table.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// All routes, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The file named by `SOTTO_ROUTES`, else the built-in UK routes: how a
    /// community elsewhere ships its own.
    pub fn from_env() -> Result<Routes, RoutesError> {
        match std::env::var_os("SOTTO_ROUTES") {
            Some(path) if !path.is_empty() => Routes::load(path),
            _ => Ok(Routes::builtin()),
        }
    }

    /// The routes for `kind`, in file order (none for an unknown kind).
    pub fn for_kind(&self, kind: &str) -> Vec<&Route> {
        self.routes.iter().filter(|r| r.applies_to(kind)).collect()
    }

    /// The card for a warning about `kind`, as data (for JSON output).
    /// Deadlines are worked out when `date` is known, and compared with
    /// `today`.
    pub fn card_data(
        &self,
        kind: &str,
        date: Option<GivenDate>,
        today: Date,
    ) -> Result<Card, RoutesError> {
        if !is_kind(kind) {
            return Err(RoutesError::UnknownKind(kind.to_string()));
        }
        let mut date_notes = Vec::new();
        if let Some(given) = date {
            date_notes.extend(given.note());
            if given.date > today {
                date_notes.push(format!(
                    "The date given ({}) is after today ({today}): check it.",
                    given.date
                ));
            }
        }
        let routes = self
            .for_kind(kind)
            .into_iter()
            .map(|route| CardRoute {
                id: route.id.clone(),
                name: route.name.clone(),
                purpose: route.purpose.clone(),
                contact: route.contact.clone(),
                deadline: route
                    .rule_for(kind)
                    .filter(|rule| rule.no_limit.is_none())
                    .map(|rule| {
                        let due = date.map(|g| rule.apply(g.date));
                        let days_left = due.map(|d| today.days_until(d));
                        CardDeadline {
                            label: rule.label.clone(),
                            rule: rule.describe(),
                            short: rule.short.clone(),
                            date: due,
                            days_left,
                            passed: days_left.map(|n| n < 0),
                        }
                    }),
                no_time_limit: route.rule_for(kind).and_then(|rule| rule.no_limit.clone()),
                deadline_note: route.deadline_note.clone(),
                source: route.source.clone(),
            })
            .collect();
        Ok(Card {
            kind: kind.to_string(),
            routes_name: self.meta.name.clone(),
            jurisdiction: self.meta.jurisdiction.clone(),
            updated: self.meta.updated.clone(),
            date: date.map(|g| g.date),
            date_precision: date.map(|g| g.precision),
            date_notes,
            today,
            routes,
            notes: self.meta.notes.clone(),
        })
    }

    /// The card for a warning about `kind` as readable plain text: the
    /// routes in file order, each deadline as an ISO date with "passed" or
    /// "N days left" when `date` (a full day) is known, and the notes at the
    /// end. For a month-only date, use [`Routes::card_data`] with a
    /// [`GivenDate`] and [`Card::render`], which says how it was counted.
    pub fn card(&self, kind: &str, date: Option<Date>, today: Date) -> String {
        match self.card_data(kind, date.map(GivenDate::from), today) {
            Ok(card) => card.render(),
            Err(e) => format!("{e}\n"),
        }
    }
}

/// Checks every key against the format, naming the route, before serde
/// (whose message names only a line).
fn check_keys(table: &toml::Table) -> Result<(), RoutesError> {
    let unknown = |place: String, key: &str, expected: &[&str]| RoutesError::UnknownKey {
        place,
        key: key.to_string(),
        expected: expected.join(", "),
    };
    for key in table.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            return Err(unknown("top level".to_string(), key, TOP_KEYS));
        }
    }
    if let Some(toml::Value::Table(meta)) = table.get("meta") {
        for key in meta.keys() {
            if !META_KEYS.contains(&key.as_str()) {
                return Err(unknown("[meta]".to_string(), key, META_KEYS));
            }
        }
    }
    if let Some(toml::Value::Array(routes)) = table.get("route") {
        for (i, route) in routes.iter().enumerate() {
            let Some(route) = route.as_table() else {
                continue;
            };
            let place = match route.get("id").and_then(|v| v.as_str()) {
                Some(id) => format!("route `{id}`"),
                None => format!("route #{}", i + 1),
            };
            for key in route.keys() {
                if !ROUTE_KEYS.contains(&key.as_str()) {
                    return Err(unknown(place, key, ROUTE_KEYS));
                }
            }
            let deadlines: Vec<&toml::Table> = match route.get("deadline") {
                Some(toml::Value::Table(one)) => vec![one],
                Some(toml::Value::Array(many)) => {
                    many.iter().filter_map(|v| v.as_table()).collect()
                }
                _ => Vec::new(),
            };
            for deadline in deadlines {
                for key in deadline.keys() {
                    if !DEADLINE_KEYS.contains(&key.as_str()) {
                        return Err(unknown(format!("{place}, deadline"), key, DEADLINE_KEYS));
                    }
                }
            }
        }
    }
    Ok(())
}

fn validate_meta(meta: &Meta) -> Result<(), RoutesError> {
    let bad = |field, problem: &str| RoutesError::Meta {
        field,
        problem: problem.to_string(),
    };
    if meta.name.trim().is_empty() {
        return Err(bad("name", "must not be empty"));
    }
    if meta.jurisdiction.trim().is_empty() {
        return Err(bad("jurisdiction", "must not be empty"));
    }
    match GivenDate::parse(&meta.updated) {
        Ok(g) if g.precision == Precision::Day => {}
        Ok(_) => return Err(bad("updated", "must be a full date, YYYY-MM-DD")),
        Err(e) => return Err(bad("updated", &e.to_string())),
    }
    if meta.notes.iter().any(|n| n.trim().is_empty()) {
        return Err(bad("notes", "a note is empty"));
    }
    Ok(())
}

fn validate_route(index: usize, route: &Route) -> Result<(), RoutesError> {
    let name = if route.id.trim().is_empty() {
        format!("#{}", index + 1)
    } else {
        route.id.clone()
    };
    let bad = |field, problem: String| RoutesError::Route {
        route: name.clone(),
        field,
        problem,
    };
    let id_ok = !route.id.is_empty()
        && route
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(bad(
            "id",
            "must be lower-case letters, digits and dashes".to_string(),
        ));
    }
    for (field, text) in [
        ("name", &route.name),
        ("purpose", &route.purpose),
        ("contact", &route.contact),
    ] {
        if text.trim().is_empty() {
            return Err(bad(field, "must not be empty".to_string()));
        }
    }
    if route.kinds.is_empty() {
        return Err(bad("kinds", "must list at least one kind".to_string()));
    }
    for (i, kind) in route.kinds.iter().enumerate() {
        if !is_kind(kind) {
            return Err(bad(
                "kinds",
                format!("unknown kind `{kind}` (known kinds: {})", KINDS.join(", ")),
            ));
        }
        if route.kinds[..i].contains(kind) {
            return Err(bad("kinds", format!("`{kind}` is listed twice")));
        }
    }
    if route.source.is_empty() {
        return Err(bad("source", "must list at least one URL".to_string()));
    }
    for url in &route.source {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(bad("source", format!("`{url}` is not an http(s) URL")));
        }
    }
    if let Some(note) = &route.deadline_note
        && note.trim().is_empty()
    {
        return Err(bad("deadline_note", "must not be empty".to_string()));
    }
    let mut covered: Vec<&str> = Vec::new();
    for rule in &route.deadline {
        let kinds: Vec<&str> = if rule.kinds.is_empty() {
            route.kinds.iter().map(String::as_str).collect()
        } else {
            rule.kinds.iter().map(String::as_str).collect()
        };
        for kind in kinds {
            if !route.applies_to(kind) {
                return Err(bad(
                    "deadline.kinds",
                    format!("`{kind}` is not one of the route's kinds"),
                ));
            }
            if covered.contains(&kind) {
                return Err(bad(
                    "deadline.kinds",
                    format!("`{kind}` has two deadlines: give each kind at most one"),
                ));
            }
            covered.push(kind);
        }
        if let Some(text) = &rule.no_limit {
            if text.trim().is_empty() {
                return Err(bad("deadline.no_limit", "must not be empty".to_string()));
            }
            if rule.months != 0 || rule.days != 0 || !rule.label.is_empty() || rule.short.is_some()
            {
                return Err(bad(
                    "deadline.no_limit",
                    "a kind with no time limit has no months, days, label or short".to_string(),
                ));
            }
            continue;
        }
        if rule.short.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(bad("deadline.short", "must not be empty".to_string()));
        }
        if !(0..=1200).contains(&rule.months) {
            return Err(bad(
                "deadline.months",
                format!("{} is out of range (0 to 1200)", rule.months),
            ));
        }
        if !(-31..=366).contains(&rule.days) {
            return Err(bad(
                "deadline.days",
                format!("{} is out of range (-31 to 366)", rule.days),
            ));
        }
        if rule.months == 0 && rule.days <= 0 {
            return Err(bad(
                "deadline",
                "must end after the date of the behaviour (months or days must be positive)"
                    .to_string(),
            ));
        }
        if rule.label.trim().is_empty() {
            return Err(bad("deadline.label", "must not be empty".to_string()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Cards
// ---------------------------------------------------------------------------

/// Where one warning can go next: the routes for its kind, with deadlines
/// worked out. Serializable for `--json`; [`Card::render`] gives plain text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Card {
    /// The kind of behaviour.
    pub kind: String,
    /// The route file's `meta.name`.
    pub routes_name: String,
    /// The route file's `meta.jurisdiction`.
    pub jurisdiction: String,
    /// The route file's `meta.updated`.
    pub updated: String,
    /// The date deadlines are counted from, if known.
    pub date: Option<Date>,
    /// Whether that date was given as a day or a month.
    pub date_precision: Option<Precision>,
    /// Sentences about the date (month-only, or after today).
    pub date_notes: Vec<String>,
    /// The day deadlines were compared with.
    pub today: Date,
    /// The routes, in file order.
    pub routes: Vec<CardRoute>,
    /// The file's notes, shown with every card.
    pub notes: Vec<String>,
}

/// One route on a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardRoute {
    /// The route's id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it is for.
    pub purpose: String,
    /// How to contact it.
    pub contact: String,
    /// Its deadline for this kind, if it has one.
    pub deadline: Option<CardDeadline>,
    /// Set when this kind has no time limit on this route: what to say.
    pub no_time_limit: Option<String>,
    /// What to know about time.
    pub deadline_note: Option<String>,
    /// Official pages the entry is based on.
    pub source: Vec<String>,
}

/// A route's deadline on a card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardDeadline {
    /// What the deadline is for.
    pub label: String,
    /// The rule in words, e.g. "3 months minus 1 day".
    pub rule: String,
    /// What the date is for in a few words, for short cards.
    pub short: Option<String>,
    /// The last day, when the date of the behaviour is known.
    pub date: Option<Date>,
    /// Days from today to the last day (0 on it, negative after).
    pub days_left: Option<i64>,
    /// Whether the last day is before today.
    pub passed: Option<bool>,
}

impl Card {
    /// The card as plain text.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let kind = self.kind.replace('-', " ");
        // Writing to a String cannot fail.
        let _ = writeln!(out, "Where this can go next: {kind}");
        let _ = writeln!(out, "{} (updated {})", self.routes_name, self.updated);
        let _ = writeln!(out, "{}", self.jurisdiction);
        match self.date {
            Some(date) => {
                let _ = writeln!(out, "Date of the behaviour: {date}. Today: {}.", self.today);
            }
            None => {
                let _ = writeln!(
                    out,
                    "No date given: add the date of the behaviour to see each deadline."
                );
            }
        }
        for note in &self.date_notes {
            let _ = writeln!(out, "{note}");
        }
        if self.routes.is_empty() {
            let _ = writeln!(out, "\nThis route file lists no routes for this kind.");
        }
        for (i, route) in self.routes.iter().enumerate() {
            let _ = writeln!(out, "\n{}. {}", i + 1, route.name);
            let _ = writeln!(out, "   What it is for: {}", route.purpose);
            let _ = writeln!(out, "   Contact: {}", route.contact);
            match &route.deadline {
                Some(d) => match (d.date, d.days_left) {
                    (Some(date), Some(left)) => {
                        let _ = writeln!(
                            out,
                            "   Deadline: {date} ({}). {}",
                            status_text(left),
                            d.label
                        );
                        let _ = writeln!(
                            out,
                            "   (Counted as {} from {}.)",
                            d.rule,
                            self.date.map(|x| x.to_string()).unwrap_or_default()
                        );
                    }
                    _ => {
                        let _ = writeln!(
                            out,
                            "   Deadline: {} from the date of the behaviour. {}",
                            d.rule, d.label
                        );
                    }
                },
                None => match &route.no_time_limit {
                    Some(why) => {
                        let _ = writeln!(out, "   Deadline: no time limit ({why}).");
                    }
                    None => {
                        let _ = writeln!(out, "   Deadline: none fixed.");
                    }
                },
            }
            if let Some(note) = &route.deadline_note {
                let _ = writeln!(out, "   About time: {note}");
            }
            let _ = writeln!(out, "   Source: {}", route.source.join(" ; "));
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nKeep in mind:");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

impl CardRoute {
    /// The route in one line for a short card (`sotto warnings`), from the
    /// same data as the full card so the two cannot disagree: "Police
    /// (summary offences: by 2024-11-02, passed)", "Police (no time
    /// limit)", "ACAS early conciliation (3 months minus 1 day from the
    /// date)", or the name alone when nothing about time is fixed.
    pub fn short_text(&self) -> String {
        let time = match (&self.deadline, &self.no_time_limit) {
            (Some(d), _) => {
                let what = d
                    .short
                    .as_ref()
                    .map(|s| format!("{s}: "))
                    .unwrap_or_default();
                match (d.date, d.days_left) {
                    (Some(date), Some(left)) => {
                        format!("{what}by {date}, {}", status_text(left))
                    }
                    _ => format!("{what}{} from the date", d.rule),
                }
            }
            (None, Some(_)) => "no time limit".to_string(),
            (None, None) => return self.name.clone(),
        };
        format!("{} ({time})", self.name)
    }
}

impl fmt::Display for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        match Date::parse(s) {
            Ok(date) => date,
            Err(e) => panic!("{e}"),
        }
    }

    fn acas(routes: &Routes) -> &Route {
        match routes.routes().iter().find(|r| r.id == "acas") {
            Some(r) => r,
            None => panic!("no acas route"),
        }
    }

    const MINIMAL: &str = r#"
[meta]
name = "Test"
jurisdiction = "Nowhere"
updated = "2026-11-21"
notes = ["A note."]

[[route]]
id = "desk"
name = "The desk"
kinds = ["bullying"]
purpose = "Helps."
contact = "Ring the bell."
source = ["https://example.org/desk"]
"#;

    fn refused(text: &str) -> String {
        match Routes::parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn builtin_parses_and_covers_every_kind() {
        let routes = Routes::builtin();
        assert_eq!(routes.meta().updated, "2026-11-21");
        for kind in KINDS {
            assert!(
                !routes.for_kind(kind).is_empty(),
                "no route for kind {kind}"
            );
        }
        let ids: Vec<&str> = routes.routes().iter().map(|r| r.id.as_str()).collect();
        for id in ["icgs", "isma", "police", "union", "acas", "solicitor"] {
            assert!(ids.contains(&id), "missing route {id}");
        }
        assert!(routes.for_kind("no-such-kind").is_empty());
    }

    #[test]
    fn acas_deadline_is_three_months_minus_one_day() {
        let routes = Routes::builtin();
        let acas = acas(&routes);
        let deadline = |s: &str| match acas.deadline_for("harassment", d(s)) {
            Some(x) => x.date,
            None => panic!("acas has no deadline"),
        };
        assert_eq!(deadline("2024-03-14"), d("2024-06-13"));
        // 3 months beginning with 30 Nov: the corresponding date (30 Feb)
        // does not exist, so the period ends on the last day of February.
        // Clamping first and then subtracting a day would give 2025-02-27,
        // a day earlier than the law allows; guidance on tribunal time
        // limits gives 28 Feb (29 in a leap year) for an act on 30 Nov.
        assert_eq!(deadline("2024-11-30"), d("2025-02-28"));
        assert_eq!(deadline("2023-11-30"), d("2024-02-29"));
        assert_eq!(deadline("2025-03-01"), d("2025-05-31"));
        assert_eq!(deadline("2024-03-31"), d("2024-06-30"));
        assert_eq!(deadline("2022-02-02"), d("2022-05-01"));
        assert_eq!(deadline("2024-12-31"), d("2025-03-30"));
    }

    #[test]
    fn police_summary_deadline_is_six_months() {
        let routes = Routes::builtin();
        let police = match routes.routes().iter().find(|r| r.id == "police") {
            Some(r) => r,
            None => panic!("no police route"),
        };
        let due = |s: &str| police.deadline_for("harassment", d(s)).map(|x| x.date);
        assert_eq!(due("2024-01-10"), Some(d("2024-07-10")));
        assert_eq!(due("2024-08-31"), Some(d("2025-02-28")));
        let label = police.rule_for("harassment").map(|r| r.label.as_str());
        assert!(label.is_some_and(|l| l.contains("Summary offences only")));
        // Issue 12, item 4: sexual offences have no time limit, so no date.
        assert_eq!(
            police.deadline_for("sexual-misconduct", d("2024-01-10")),
            None
        );
        let none = police
            .rule_for("sexual-misconduct")
            .and_then(|r| r.no_limit.as_deref());
        assert!(
            none.is_some_and(|t| t.contains("no time limit")),
            "{none:?}"
        );
    }

    /// Issue 12, item 4: the short card in `sotto warnings` and the full
    /// card in `sotto routes` say the same about time, for every kind, with
    /// a day, a month or no date, before and after the deadlines.
    #[test]
    fn every_short_card_agrees_with_its_full_card() {
        let routes = Routes::builtin();
        let dates = [
            None,
            Some("2024-05-02"),
            Some("2024-05"),
            Some("2026-11-01"),
        ];
        for kind in KINDS {
            for when in dates {
                let given = when.map(|w| GivenDate::parse(w).expect("date"));
                let card = routes
                    .card_data(kind, given, d("2026-11-21"))
                    .expect("card");
                let full = card.render();
                for (i, r) in card.routes.iter().enumerate() {
                    let start = full
                        .find(&format!("\n{}. {}\n", i + 1, r.name))
                        .unwrap_or_else(|| panic!("{} not on the {kind} card:\n{full}", r.name));
                    let end = full[start + 1..]
                        .find(&format!("\n{}. ", i + 2))
                        .or_else(|| full[start + 1..].find("\nKeep in mind"))
                        .map_or(full.len(), |e| start + 1 + e);
                    let block = &full[start..end];
                    let short = r.short_text();
                    let what = format!("{kind} {when:?} {}: short {short:?}\n{block}", r.name);
                    assert!(short.starts_with(&r.name), "{what}");
                    match (&r.deadline, &r.no_time_limit) {
                        (Some(dl), None) => match (dl.date, dl.days_left) {
                            (Some(date), Some(left)) => {
                                let status = status_text(left);
                                assert!(short.contains(&format!("by {date}, {status})")), "{what}");
                                assert!(
                                    block.contains(&format!("Deadline: {date} ({status})")),
                                    "{what}"
                                );
                            }
                            _ => {
                                assert!(
                                    short.contains(&format!("{} from the date", dl.rule)),
                                    "{what}"
                                );
                                assert!(
                                    block.contains(&format!("Deadline: {} from the date", dl.rule)),
                                    "{what}"
                                );
                            }
                        },
                        (None, Some(_)) => {
                            assert_eq!(short, format!("{} (no time limit)", r.name), "{what}");
                            assert!(block.contains("Deadline: no time limit"), "{what}");
                        }
                        (None, None) => {
                            assert_eq!(short, r.name, "{what}");
                            assert!(block.contains("Deadline: none fixed."), "{what}");
                        }
                        (Some(_), Some(_)) => panic!("both a deadline and no limit: {what}"),
                    }
                }
                // The card that started it: no police date for sexual misconduct.
                if kind == "sexual-misconduct" {
                    let police = card
                        .routes
                        .iter()
                        .find(|r| r.id == "police")
                        .expect("police");
                    assert_eq!(police.short_text(), "Police (no time limit)");
                }
            }
        }
    }

    #[test]
    fn deadlines_per_kind_are_checked() {
        let two = format!(
            "{}\n[[route.deadline]]\nkinds = [\"bullying\"]\nmonths = 1\nlabel = \"x\"\n\
             \n[[route.deadline]]\nkinds = [\"harassment\"]\nno_limit = \"none\"\n",
            MINIMAL.replace(r#"["bullying"]"#, r#"["bullying", "harassment"]"#)
        );
        let routes = Routes::parse(&two).expect("two deadlines");
        let desk = &routes.routes()[0];
        assert!(desk.deadline_for("bullying", d("2024-01-01")).is_some());
        assert!(desk.deadline_for("harassment", d("2024-01-01")).is_none());
        // A kind the route does not have, a kind twice, and a no-limit with a date.
        let err = refused(&two.replace(r#"kinds = ["harassment"]"#, r#"kinds = ["other"]"#));
        assert!(err.contains("not one of the route's kinds"), "{err}");
        let err = refused(&two.replace(r#"kinds = ["harassment"]"#, r#"kinds = ["bullying"]"#));
        assert!(err.contains("two deadlines"), "{err}");
        let err = refused(&two.replace("no_limit = \"none\"", "no_limit = \"none\"\nmonths = 2"));
        assert!(err.contains("no_limit"), "{err}");
    }

    #[test]
    fn month_only_dates_count_from_the_first_day() {
        let given = match GivenDate::parse("2024-03") {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(given.date, d("2024-03-01"));
        assert_eq!(given.precision, Precision::Month);
        assert!(given.note().is_some_and(|n| n.contains("2024-03-01")));
        assert_eq!(d("2024-03"), d("2024-03-01"));

        let routes = Routes::builtin();
        let card = match routes.card_data("harassment", Some(given), d("2024-04-01")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let acas = card.routes.iter().find(|r| r.id == "acas");
        let due = acas.and_then(|r| r.deadline.as_ref()).and_then(|x| x.date);
        assert_eq!(due, Some(d("2024-05-31")));
        assert!(card.render().contains("earliest day it allows"));
    }

    #[test]
    fn adding_months_clamps_to_the_month_end() {
        assert_eq!(d("2024-01-31").add(1, 0), d("2024-02-29"));
        assert_eq!(d("2023-01-31").add(1, 0), d("2023-02-28"));
        assert_eq!(d("2000-01-31").add(1, 0), d("2000-02-29"));
        assert_eq!(d("1900-01-31").add(1, 0), d("1900-02-28"));
        assert_eq!(d("2024-03-31").add(-1, 0), d("2024-02-29"));
        assert_eq!(d("2024-11-15").add(3, 0), d("2025-02-15"));
        assert_eq!(d("2024-01-20").add(0, 15), d("2024-02-04"));
        assert_eq!(d("2024-01-31").add(1, 1), d("2024-03-01"));
        assert_eq!(d("2024-03-01").add(0, -1), d("2024-02-29"));
        assert_eq!(d("2024-02-29").add(12, 0), d("2025-02-28"));
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(d("2024-02-29").to_string(), "2024-02-29");
        for bad in [
            "2023-02-29",
            "2024-13",
            "2024-00-10",
            "2024-3-14",
            "24-03-14",
            "2024/03/14",
            "2024-03-14-01",
            "",
            "2024-03-32",
        ] {
            assert!(Date::parse(bad).is_err(), "accepted {bad}");
        }
        let err = match Date::parse("2023-02-29") {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("2023-02-29"), "{err}");
    }

    #[test]
    fn unknown_kind_is_refused_naming_route_and_kind() {
        let text = MINIMAL.replace(r#"["bullying"]"#, r#"["bullying", "harrasment"]"#);
        let err = refused(&text);
        assert!(err.contains("harrasment"), "{err}");
        assert!(err.contains("desk"), "{err}");
        assert!(err.contains("kinds"), "{err}");
        assert!(Routes::parse(MINIMAL).is_ok());
    }

    #[test]
    fn unknown_keys_are_refused_naming_them() {
        let err = refused(&MINIMAL.replace("purpose =", "colour = \"red\"\npurpose ="));
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("desk"), "{err}");

        let err = refused(&MINIMAL.replace("[meta]", "[meta]\nauthor = \"x\""));
        assert!(err.contains("author"), "{err}");

        let err = refused(&format!(
            "{MINIMAL}\n[route.deadline]\nmonths = 1\nlabel = \"x\"\nweeks = 2\n"
        ));
        assert!(err.contains("weeks"), "{err}");

        let err = refused(&format!("{MINIMAL}\n[extra]\nx = 1\n"));
        assert!(err.contains("extra"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_naming_route_and_field() {
        let with_deadline = |months: i32, days: i32| {
            format!(
                "{MINIMAL}\n[route.deadline]\nmonths = {months}\ndays = {days}\nlabel = \"x\"\n"
            )
        };
        assert!(Routes::parse(&with_deadline(3, -1)).is_ok());
        let err = refused(&with_deadline(-3, 0));
        assert!(
            err.contains("desk") && err.contains("deadline.months"),
            "{err}"
        );
        let err = refused(&with_deadline(1, -40));
        assert!(err.contains("deadline.days"), "{err}");
        let err = refused(&with_deadline(0, 0));
        assert!(err.contains("deadline"), "{err}");

        let err = refused(&MINIMAL.replace("https://example.org/desk", "example.org"));
        assert!(err.contains("source"), "{err}");
        let err = refused(&MINIMAL.replace("2026-11-21", "2026-11"));
        assert!(err.contains("updated"), "{err}");
        let err = refused(&MINIMAL.replace("id = \"desk\"", "id = \"Desk Two\""));
        assert!(err.contains("id"), "{err}");
        let twice = format!(
            "{MINIMAL}{}",
            &MINIMAL[MINIMAL.find("[[route]]").unwrap_or(0)..]
        );
        let err = refused(&twice);
        assert!(err.contains("already"), "{err}");
        let err = refused(&MINIMAL.replace("contact = \"Ring the bell.\"\n", ""));
        assert!(err.contains("contact"), "{err}");
    }

    #[test]
    fn load_reads_a_file_and_reports_a_missing_one() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let path = dir.path().join("routes.toml");
        if let Err(e) = std::fs::write(&path, MINIMAL) {
            panic!("{e}");
        }
        let routes = match Routes::load(&path) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(routes.for_kind("bullying").len(), 1);
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            Routes::load(&missing),
            Err(RoutesError::Read { .. })
        ));
    }

    #[test]
    fn sexual_misconduct_card_has_routes_deadlines_and_notes() {
        let routes = Routes::builtin();
        let card = routes.card("sexual-misconduct", Some(d("2024-03-14")), d("2024-05-01"));
        for name in [
            "ICGS helpline",
            "Independent Sexual Misconduct Adviser (ISMA)",
            "Police",
            "ACAS early conciliation",
        ] {
            assert!(card.contains(name), "missing {name}:\n{card}");
        }
        assert!(card.contains("2024-06-13 (43 days left)"), "{card}");
        // Sexual offences have no police time limit (the summary-offence
        // date, 2024-09-14, is for other kinds).
        assert!(!card.contains("2024-09-14"), "{card}");
        assert!(
            card.contains("Deadline: no time limit (sexual offences"),
            "{card}"
        );
        assert!(card.contains("whips are not independent"), "{card}");
        assert!(card.contains("not legally privileged"), "{card}");
        // File order: ICGS before ISMA before police before ACAS.
        let at = |s: &str| card.find(s).unwrap_or(usize::MAX);
        assert!(at("ICGS helpline") < at("(ISMA)"));
        assert!(at("(ISMA)") < at("\n3. Police"));
        assert!(at("\n3. Police") < at("ACAS early conciliation"));

        let later = routes.card("sexual-misconduct", Some(d("2024-03-14")), d("2026-11-21"));
        assert!(later.contains("2024-06-13 (passed)"), "{later}");
        let last_day = routes.card("bullying", Some(d("2024-03-14")), d("2024-06-13"));
        assert!(
            last_day.contains("2024-06-13 (last day today)"),
            "{last_day}"
        );

        let undated = routes.card("sexual-misconduct", None, d("2026-11-21"));
        assert!(
            undated.contains("3 months minus 1 day from the date"),
            "{undated}"
        );
        assert!(!undated.contains("days left"), "{undated}");

        // Only the ISMA route is specific to sexual misconduct.
        let bullying = routes.card("bullying", None, d("2026-11-21"));
        assert!(!bullying.contains("(ISMA)"), "{bullying}");

        let unknown = routes.card("shouting", None, d("2026-11-21"));
        assert!(unknown.contains("unknown kind"), "{unknown}");
    }

    #[test]
    fn card_data_serializes_to_json() {
        let routes = Routes::builtin();
        let card = match routes.card_data(
            "harassment",
            Some(GivenDate::from(d("2024-03-14"))),
            d("2024-05-01"),
        ) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let json = match serde_json::to_value(&card) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(json["date"], "2024-03-14");
        assert_eq!(json["date_precision"], "day");
        let acas = json["routes"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == "acas"));
        let acas = match acas {
            Some(a) => a,
            None => panic!("no acas in {json}"),
        };
        assert_eq!(acas["deadline"]["date"], "2024-06-13");
        assert_eq!(acas["deadline"]["days_left"], 43);
        assert_eq!(acas["deadline"]["passed"], false);
        assert!(serde_json::to_string(&routes).is_ok());
        assert!(matches!(
            routes.card_data("nope", None, d("2024-05-01")),
            Err(RoutesError::UnknownKind(_))
        ));
    }

    #[test]
    fn today_is_plausible() {
        let now = today();
        assert!(now.year() >= 2025, "{now}");
        assert!(now.year() < 2200, "{now}");
    }

    #[test]
    fn civil_from_days_round_trips() {
        let known = [
            ("1970-01-01", 0),
            ("1969-12-31", -1),
            ("2000-03-01", 11_017),
            ("2000-02-29", 11_016),
            ("2024-01-01", 19_723),
            ("2024-02-29", 19_782),
            ("2024-03-01", 19_783),
            ("1900-03-01", -25_508),
            ("0000-03-01", -719_468),
            ("9999-12-31", 2_932_896),
        ];
        for (s, days) in known {
            assert_eq!(d(s).days_since_epoch(), days, "{s}");
            assert_eq!(Date::from_days_since_epoch(days), d(s), "{days}");
        }
        // Every day from 1600 to 2400 is the day after the one before.
        let mut prev = Date::from_days_since_epoch(-135_140);
        assert_eq!(prev, d("1600-01-01"));
        for n in -135_139..=157_000 {
            let date = Date::from_days_since_epoch(n);
            assert_eq!(date.days_since_epoch(), n);
            let next_day = match Date::new(prev.year, prev.month, prev.day + 1) {
                Some(x) => x,
                None => match Date::new(prev.year, prev.month + 1, 1) {
                    Some(x) => x,
                    None => match Date::new(prev.year + 1, 1, 1) {
                        Some(x) => x,
                        None => panic!("no day after {prev}"),
                    },
                },
            };
            assert_eq!(date, next_day, "day {n}");
            prev = date;
        }
        // Saturation at the ends of the range.
        assert_eq!(Date::from_days_since_epoch(i64::MAX / 4), d("9999-12-31"));
        assert_eq!(Date::from_days_since_epoch(i64::MIN / 4), d("0000-01-01"));
    }
}
