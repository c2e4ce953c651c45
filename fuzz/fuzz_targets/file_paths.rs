//! `mount::files::path_problem` and `check_plan`, each checked against an
//! independent statement of the driver's rules.
//!
//! Input: lines `path` or `path \t mode` (mode in octal); each line is one
//! planned file whose object is named after its line number.

#![no_main]

use std::collections::BTreeSet;

use coffer::backend::PlannedFile;
use coffer::mount::files::{check_plan, path_problem};
use libfuzzer_sys::fuzz_target;

/// The rules, written out again: a path the driver accepts.
fn acceptable(path: &str) -> bool {
    if path.is_empty() || path.starts_with('/') || path.len() > 4096 || path.contains('\0') {
        return false;
    }
    let elements: Vec<&str> = path.split('/').collect();
    if elements[0].starts_with("..") {
        // ".." itself and the driver's own "..data", "..2024_…".
        return false;
    }
    elements
        .iter()
        .all(|e| !e.is_empty() && *e != "." && *e != ".." && e.len() <= 255)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut files = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let (path, mode) = match line.split_once('\t') {
            Some((p, m)) => (p, u32::from_str_radix(m, 8).ok()),
            None => (line, None),
        };
        assert_eq!(
            path_problem(path).is_none(),
            acceptable(path),
            "path_problem disagrees on {path:?}: {:?}",
            path_problem(path)
        );
        files.push(PlannedFile {
            path: path.to_owned(),
            mode,
            config: format!("o{i}"),
            template_only: false,
            all_keys: false,
            optional: false,
        });
    }
    // The whole list, and (so that valid plans are common) the acceptable
    // paths alone.
    let valid: Vec<PlannedFile> = files
        .iter()
        .filter(|f| acceptable(&f.path))
        .cloned()
        .collect();
    for plan in [files, valid] {
        let expected = {
            let mut ok = !plan.is_empty();
            let mut seen = BTreeSet::new();
            for f in &plan {
                ok &= acceptable(&f.path) && f.mode.is_none_or(|m| m <= 0o777);
                ok &= seen.insert(f.path.as_str());
            }
            // No path may be a directory of another.
            for a in &seen {
                for b in &seen {
                    ok &= !(b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'/');
                }
            }
            ok
        };
        let got = check_plan(&plan);
        assert_eq!(
            got.is_ok(),
            expected,
            "check_plan disagrees: {got:?} for {:?}",
            plan.iter().map(|f| (&f.path, f.mode)).collect::<Vec<_>>()
        );
        if let Err(e) = got {
            let _ = e.to_string();
        }
    }
});
