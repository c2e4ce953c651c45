//! Values as the Go programs around coffer write them (the driver, the
//! vault, openbao and aws providers, Kubernetes manifests), so that users can
//! copy a value from a peer's flags or chart into coffer's:
//!
//! * [`duration`]: Go's `time.ParseDuration` syntax (`1m30s`, `1.5h`,
//!   `300ms`, `2h45m`), plus a bare number of seconds (`90`) as coffer has
//!   always taken;
//! * [`listen_addr`]: Go's listen address forms, `:8098` (every interface),
//!   `host:port`, `[v6]:port`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Longest duration accepted (about 31 years): far above any timeout, and
/// below what `Duration` and Go's `time.Duration` (292 years) can hold.
const MAX_SECONDS: f64 = 1e9;

/// A Go duration (`1m30s`, `1.5h`, `300ms`, `2h45m0.5s`, `0`), or a bare
/// number of seconds (`90`, `2.5`). Units: `ns`, `us` (or `µs`, `μs`), `ms`,
/// `s`, `m`, `h`. Negative durations are refused.
pub fn duration(raw: &str) -> Result<Duration, String> {
    let text = raw.trim();
    let bad = || {
        format!(
            "{raw:?} is not a duration: use Go's form, e.g. 100s, 1m30s, 1.5h or 500ms (a bare number is seconds)"
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    if text.starts_with('-') {
        return Err(format!("{raw:?}: a duration cannot be negative"));
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    // A bare number: seconds.
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return seconds(number(text).ok_or_else(bad)?, raw);
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value = number(&rest[..digits]).ok_or_else(bad)?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(bad()),
            unit => {
                return Err(format!(
                    "{raw:?}: unknown unit {unit:?} in a duration (use ns, us, ms, s, m or h)"
                ));
            }
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    seconds(total, raw)
}

/// `12`, `1.5`, `.5`, `1.`, as Go reads a duration's number; not `.` or `1.2.3`.
fn number(text: &str) -> Option<f64> {
    if text.is_empty() || text == "." || text.matches('.').count() > 1 {
        return None;
    }
    let padded = match (text.starts_with('.'), text.ends_with('.')) {
        (true, _) => format!("0{text}"),
        (_, true) => format!("{text}0"),
        _ => text.to_owned(),
    };
    padded.parse().ok()
}

fn seconds(secs: f64, raw: &str) -> Result<Duration, String> {
    if !secs.is_finite() || !(0.0..=MAX_SECONDS).contains(&secs) {
        return Err(format!("{raw:?} is out of range (at most {MAX_SECONDS} s)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A listen address: `host:port`, `[v6]:port`, or Go's `:port` for every
/// IPv4 interface (`0.0.0.0:port`).
pub fn listen_addr(raw: &str) -> Result<SocketAddr, String> {
    let text = raw.trim();
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{raw:?}: {port:?} is not a port number (0-65535)"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    text.parse().map_err(|_| {
        format!("{raw:?} is not a listen address: use HOST:PORT, [IPv6]:PORT or :PORT")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("1m30s", ms(90_000)),
            ("1.5h", ms(5_400_000)),
            ("300ms", ms(300)),
            ("2h45m", ms(9_900_000)),
            ("2h45m0.5s", ms(9_900_500)),
            ("1h0m0s", ms(3_600_000)),
            (".5s", ms(500)),
            ("1.s", ms(1000)),
            ("+5s", ms(5000)),
            ("1500us", Duration::from_micros(1500)),
            ("1500µs", Duration::from_micros(1500)),
            ("1000000ns", ms(1)),
            ("0", ms(0)),
            ("0s", ms(0)),
            // coffer's own older forms still work.
            ("100s", ms(100_000)),
            ("2m", ms(120_000)),
            ("90", ms(90_000)),
            ("2.5", ms(2_500)),
            (" 5s ", ms(5000)),
        ] {
            assert_eq!(duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_durations_are_refused_with_the_reason() {
        for (text, reason) in [
            ("soon", "not a duration"),
            ("", "not a duration"),
            ("5d", "unknown unit \"d\""),
            ("1m30", "not a duration"),
            ("s", "not a duration"),
            ("1..5s", "not a duration"),
            (".s", "not a duration"),
            ("-1s", "cannot be negative"),
            ("99999999999h", "out of range"),
            ("1e3s", "unknown unit \"e\""),
        ] {
            let err = duration(text).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn listen_addresses_take_gos_port_only_form() {
        assert_eq!(listen_addr(":8098").unwrap().to_string(), "0.0.0.0:8098");
        assert_eq!(
            listen_addr("127.0.0.1:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(listen_addr("[::]:8098").unwrap().to_string(), "[::]:8098");
        assert!(
            listen_addr(":http")
                .unwrap_err()
                .contains("not a port number")
        );
        assert!(listen_addr(":70000").is_err());
        assert!(
            listen_addr("localhost:8080")
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!(listen_addr("8080").is_err());
    }
}
