//! Reading coffer's `/metrics` (Prometheus text format) in tests and in
//! `make bench` (e2e/bench.rs includes this file), so both count the same
//! way. No dependencies beyond std; its self-tests are in tests/harness.rs.

/// The sum of the samples whose line starts with `prefix`, or `None` when no
/// sample line does.
///
/// `prefix` is compared as text against whole sample lines (`# HELP` and
/// `# TYPE` lines are skipped):
/// * a full series and a space, `coffer_mounts_in_flight ` or
///   `coffer_mounts_total{provider="aws",code="OK"} `, matches that one
///   series;
/// * a name and part of its labels, `coffer_backend_requests_total{backend="vault",operation="read"`,
///   sums every series that continues it (here: every outcome).
///
/// The value is the field after the series (a timestamp after it is
/// ignored). Panics on a matching line without a number there: that is
/// broken output, not an absent series.
pub fn metric_sum(text: &str, prefix: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(prefix) {
            continue;
        }
        let value =
            sample_value(line).unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
        *sum.get_or_insert(0.0) += value;
    }
    sum
}

/// [`metric_sum`], with 0 when no sample matches: a labelled counter does
/// not appear before its first increment, and Prometheus reads that as 0.
pub fn metric(text: &str, prefix: &str) -> f64 {
    metric_sum(text, prefix).unwrap_or(0.0)
}

/// The value of one sample line `name{labels} value [timestamp]`. Label
/// values may hold spaces, braces and escaped quotes.
fn sample_value(line: &str) -> Option<f64> {
    let mut series_end = line.find([' ', '{'])?;
    if line[series_end..].starts_with('{') {
        let mut in_quotes = false;
        let mut escaped = false;
        let mut close = None;
        for (i, c) in line[series_end..].char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    close = Some(series_end + i + 1);
                    break;
                }
                _ => {}
            }
        }
        series_end = close?;
    }
    line[series_end..].split_whitespace().next()?.parse().ok()
}
