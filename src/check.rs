//! `coffer check`: what a mount would refuse, found before it happens.

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::CheckArgs;
use crate::errors::chain;
use crate::metrics::Metrics;
use crate::request::Parameters;

/// One line per problem, `file: class: problem`.
pub fn problems(args: &CheckArgs) -> Vec<String> {
    let backends = crate::serve::backends(&args.backends, &Arc::new(Metrics::new()));
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
            if !crate::spc::is_provider_name(&spc.provider) {
                lines.push(format!(
                    "{prefix}: spec.provider: invalid provider name {:?}: {}",
                    spc.provider,
                    crate::spc::PROVIDER_NAME_RULE
                ));
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
