//! `coffer check`: what a mount would refuse, found before it happens.

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::CheckArgs;
use crate::metrics::Metrics;
use crate::mount::request::Parameters;
use crate::server::status::chain;

/// One line per problem, `file: class: problem`.
pub fn problems(args: &CheckArgs) -> Vec<String> {
    let backends = match crate::serve::backends(
        &args.backends,
        crate::mount::MAX_RESPONSE_BYTES,
        Arc::new(Metrics::new()),
    ) {
        Ok(b) => b,
        Err(e) => return vec![e],
    };
    let mut lines = Vec::new();
    for path in &args.files {
        let classes = match crate::spc::read(path) {
            Ok(c) => c,
            Err(e) => {
                lines.push(chain(&e));
                continue;
            }
        };
        for class in classes {
            let spc = match class {
                Ok(spc) => spc,
                Err(e) => {
                    lines.push(chain(&e));
                    continue;
                }
            };
            let prefix = format!("{}: SecretProviderClass {:?}", path.display(), spc.name);
            if let Err(e) = crate::server::socket::validate_name(&spc.provider) {
                lines.push(format!("{prefix}: spec.provider: {e}"));
                continue;
            }
            let params: Parameters = spc.parameters.into_iter().collect();
            match backends.plan(&spc.provider, &params) {
                Ok(plan) => lines.extend(
                    plan.plan
                        .warnings
                        .iter()
                        .map(|w| format!("{prefix}: warning: {w}")),
                ),
                Err(e) => lines.push(format!("{prefix}: {}", chain(&e))),
            }
        }
    }
    lines
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let lines = problems(args);
    for line in &lines {
        println!("{line}");
    }
    if lines.is_empty() {
        println!("ok: {} file(s) checked", args.files.len());
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
