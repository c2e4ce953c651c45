//! ARNs as aws-sdk-go's `arn.Parse` splits them, and what an object's
//! name and `objectType` say about its kind and region.

use super::{Kind, spc_error};
use crate::backend::aws::Error;

/// An ARN, split as aws-sdk-go's `arn.Parse` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    pub fn parse(s: &'a str) -> Option<Arn<'a>> {
        let mut parts = s.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let partition = parts.next()?;
        let service = parts.next()?;
        let region = parts.next()?;
        let account = parts.next()?;
        let resource = parts.next()?;
        Some(Arn {
            partition,
            service,
            region,
            account,
            resource,
        })
    }
}

pub(super) fn check_arn_region(name: &str, region: &str) -> Result<(), Error> {
    if name.starts_with("arn:")
        && let Some(arn) = Arn::parse(name)
        && arn.region != region
    {
        return Err(spc_error(format!(
            "ARN region must match region {region}: {name}"
        )));
    }
    Ok(())
}

/// `validateObjectName`: the kind an object name and objectType give.
/// `region`: the region of that slot when known (else checked later).
pub(super) fn object_kind(
    name: &str,
    object_type: &str,
    region: Option<&str>,
) -> Result<Kind, Error> {
    let arn = if name.starts_with("arn:") {
        Some(
            Arn::parse(name)
                .ok_or_else(|| spc_error(format!("Invalid ARN format in object name: {name}")))?,
        )
    } else {
        None
    };
    if let Some(region) = region {
        check_arn_region(name, region)?;
    }
    let Some(arn) = arn else {
        if object_type.is_empty() {
            return Err(spc_error(format!(
                "Must use objectType when a full ARN is not specified: {name}"
            )));
        }
        return Kind::from_object_type(object_type)
            .ok_or_else(|| spc_error(format!("Invalid objectType: {object_type}")));
    };
    let from_arn = Kind::from_arn_service(arn.service);
    if object_type.is_empty() {
        return from_arn
            .ok_or_else(|| spc_error(format!("Invalid service in ARN: {}", arn.service)));
    }
    let kind = Kind::from_object_type(object_type)
        .ok_or_else(|| spc_error(format!("Invalid objectType: {object_type}")))?;
    if from_arn != Some(kind) {
        return Err(spc_error(format!("objectType does not match ARN: {name}")));
    }
    Ok(kind)
}
