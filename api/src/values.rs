//! Small value types shared by the API and the planner: versions, durations, timestamps.
//!
//! They live in the API layer because they are what users write in manifests; they carry no
//! I/O and no clock, so the pure planner uses them directly.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Pattern accepted for versions, shared by the CRD schema and the parser.
pub const VERSION_PATTERN: &str = r"^v?[0-9]+(\.[0-9]+){0,4}(-[0-9A-Za-z.-]+)?$";
/// Pattern accepted for durations (Go style, as Kubernetes users write them).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Longest duration string the schema accepts (`8760h59m59.999s` is 16 characters).
pub const DURATION_MAX_LEN: u64 = 32;

/// A semver-like version: up to five numeric parts and an optional pre-release suffix.
///
/// Ordering is numeric per part (`1.10 > 1.9`), missing parts count as zero, and a pre-release
/// sorts before the plain release (`2.0.0-rc1 < 2.0.0`), as users of the source procedures expect.
#[derive(Clone, Debug)]
pub struct Version {
    raw: String,
    parts: Vec<u64>,
    pre: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {input:?}: {reason} (expected e.g. 1.2.3 or 12.5.1-rc1)")]
pub struct VersionError {
    pub input: String,
    pub reason: &'static str,
}

impl Version {
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| VersionError {
            input: s.to_string(),
            reason,
        };
        let body = s.strip_prefix('v').unwrap_or(s);
        if body.is_empty() {
            return Err(err("empty"));
        }
        let (nums, pre) = match body.split_once('-') {
            Some((n, p)) if !p.is_empty() => (n, Some(p.to_string())),
            Some(_) => return Err(err("empty pre-release suffix")),
            None => (body, None),
        };
        let mut parts = Vec::new();
        for p in nums.split('.') {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("each dotted part must be a number"));
            }
            parts.push(p.parse::<u64>().map_err(|_| err("number too large"))?);
        }
        if parts.len() > 5 {
            return Err(err("more than five numeric parts"));
        }
        if let Some(p) = &pre
            && !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(err(
                "pre-release may hold only letters, digits, '.' and '-'",
            ));
        }
        Ok(Version {
            raw: s.to_string(),
            parts,
            pre,
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.parts.len().max(other.parts.len());
        for i in 0..n {
            let a = self.parts.get(i).copied().unwrap_or(0);
            let b = other.parts.get(i).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => a.cmp(b),
        }
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Split a version into its numeric body and pre-release without allocating; `None` when it
/// is not a valid version (same rules as `Version::from_str`).
fn split_version(s: &str) -> Option<(&str, Option<&str>)> {
    let body = s.strip_prefix('v').unwrap_or(s);
    let (nums, pre) = match body.split_once('-') {
        Some((n, p)) => (n, Some(p)),
        None => (body, None),
    };
    if nums.is_empty() || nums.len() > 100 {
        return None;
    }
    let mut parts = 0;
    for p in nums.split('.') {
        if p.is_empty() || p.len() > 19 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parts += 1;
    }
    if parts > 5 {
        return None;
    }
    if let Some(p) = pre
        && (p.is_empty()
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return None;
    }
    Some((nums, pre))
}

/// Numeric comparison of two digit strings of any length.
fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Compare two version strings; unparsable strings sort before every valid version and
/// compare among themselves as text, so a garbage report never looks "newer".
///
/// Allocation-free: the planner compares versions on every pass over every member.
pub fn cmp_versions(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    match (split_version(a), split_version(b)) {
        (Some((na, pa)), Some((nb, pb))) => {
            let mut ia = na.split('.');
            let mut ib = nb.split('.');
            loop {
                match (ia.next(), ib.next()) {
                    (None, None) => break,
                    (x, y) => match cmp_digits(x.unwrap_or("0"), y.unwrap_or("0")) {
                        Ordering::Equal => {}
                        o => return o,
                    },
                }
            }
            match (pa, pb) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => x.cmp(y),
            }
        }
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

/// True when both strings name the same version (`1.2` == `1.2.0`).
pub fn same_version(a: &str, b: &str) -> bool {
    cmp_versions(a, b) == Ordering::Equal
}

/// A duration written Go-style (`90s`, `1m30s`, `40m`, `500ms`), stored in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub u64);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(s * 1000)
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }
    pub const fn millis(self) -> u64 {
        self.0
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?} (expected e.g. 90s, 1m30s, 40m, 500ms)")]
pub struct DurationError(pub String);

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(s.to_string());
        if s.is_empty() {
            return Err(err());
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total: f64 = 0.0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            if start == i {
                return Err(err());
            }
            let num: f64 = s[start..i].parse().map_err(|_| err())?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let factor = match &s[unit_start..i] {
                "ms" => 1.0,
                "s" => 1000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                _ => return Err(err()),
            };
            total += num * factor;
        }
        if !total.is_finite() || total > u64::MAX as f64 / 2.0 {
            return Err(err());
        }
        Ok(Duration(total.round() as u64))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let mut s = ms / 1000;
        let h = s / 3600;
        s %= 3600;
        let m = s / 60;
        s %= 60;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

/// Serde and JSON schema for a value written as its `Display` string and read with `FromStr`,
/// inlined in schemas as `schema`.
macro_rules! string_value {
    ($ty:ident, $schema:tt) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

string_value!(Duration, {
    "type": "string",
    "pattern": DURATION_PATTERN,
    "maxLength": DURATION_MAX_LEN,
    "description": "A duration such as 90s, 1m30s, 40m or 500ms."
});

/// A point in time: milliseconds since the Unix epoch, written as RFC 3339 in status.
///
/// The planner never reads a clock: `now` is always an argument of type `Timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }
    pub const fn millis(self) -> i64 {
        self.0
    }
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0.min(i64::MAX as u64) as i64))
    }
    /// Time elapsed since `earlier`, zero when `earlier` is in the future.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
    pub fn to_rfc3339(self) -> String {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(t) => t.to_string(),
            Err(_) => self.0.to_string(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl FromStr for Timestamp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t: jiff::Timestamp = s
            .parse()
            .map_err(|e| format!("invalid timestamp {s:?}: {e}"))?;
        Ok(Timestamp(t.as_millisecond()))
    }
}

string_value!(Timestamp, { "type": "string", "format": "date-time", "maxLength": 64 });

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn versions_order_numerically_and_prerelease_first() {
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(v("2.0.0-rc1") < v("2.0.0"));
        assert!(v("2.0.0-rc1") < v("2.0.0-rc2"));
        assert_eq!(v("1.2"), v("1.2.0"));
        assert_eq!(v("v12.5.1"), v("12.5.1"));
        assert!(v("12.5.1.1") > v("12.5.1"));
    }

    #[test]
    fn bad_versions_are_rejected_with_reason() {
        for bad in ["", "v", "1..2", "a.b", "1.2.3-", "1.2.3.4.5.6", "1.2-r c"] {
            let e = bad.parse::<Version>().unwrap_err();
            assert!(e.to_string().contains("invalid version"), "{bad}: {e}");
        }
    }

    #[test]
    fn string_comparison_agrees_with_parsed_versions() {
        let all = [
            "1",
            "1.0",
            "1.0.0",
            "1.2",
            "1.10",
            "1.9.9",
            "2.0.0-rc1",
            "2.0.0-rc2",
            "2.0.0",
            "v2.0.0",
            "10.0",
            "0009.1",
        ];
        for a in all {
            for b in all {
                assert_eq!(cmp_versions(a, b), v(a).cmp(&v(b)), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn unparsable_versions_never_compare_newer() {
        assert_eq!(cmp_versions("garbage", "0.0.1"), Ordering::Less);
        assert_eq!(cmp_versions("1.0", "junk"), Ordering::Greater);
    }

    #[test]
    fn durations_parse_go_style_and_roundtrip() {
        assert_eq!("90s".parse::<Duration>().unwrap(), Duration::from_secs(90));
        assert_eq!(
            "1m30s".parse::<Duration>().unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!("1h".parse::<Duration>().unwrap(), Duration::from_secs(3600));
        assert_eq!(
            "500ms".parse::<Duration>().unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            "1.5s".parse::<Duration>().unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        for bad in ["", "10", "s", "10x", "1m-3s", "--"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_roundtrip_rfc3339() {
        let t = Timestamp::from_millis(1_700_000_000_123);
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(s, "\"2023-11-14T22:13:20.123Z\"");
        let back: Timestamp = serde_json::from_str(&s).unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}
