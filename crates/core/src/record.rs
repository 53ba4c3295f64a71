//! One certificate of the register, owned: what the loader reads from a feed row, what the
//! synthetic register generates, and what a snapshot is built from.

use serde::{Deserialize, Serialize};

use crate::catalogue::ProductCode;
use crate::cert::CertNumber;
use crate::date::Day;
use crate::status::Status;

/// A certificate with every field of the feed contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// `证书编号`: the 16 digits.
    pub number: CertNumber,
    /// Version suffix of `证书编号`, e.g. `B0`, if any.
    pub suffix: Option<[u8; 2]>,
    /// `证书状态`.
    pub status: Status,
    /// `产品类别代码`.
    pub product_code: ProductCode,
    /// `产品名称`.
    pub product_name: String,
    /// `型号规格`, split into models as written (trimmed, not normalised).
    pub models: Vec<String>,
    /// `认证委托人名称`.
    pub applicant: String,
    /// `生产者名称`.
    pub producer: String,
    /// `生产企业名称`.
    pub factory: String,
    /// `发证日期`.
    pub issued: Day,
    /// `证书到期日期`: valid through that day, China time.
    pub expires: Day,
    /// `状态变更日期`.
    pub status_changed: Option<Day>,
    /// `状态变更原因` (empty when none).
    pub status_reason: String,
    /// `认证机构`.
    pub body_name: String,
}

/// A certificate borrowed from where it was read: what the loader hands the snapshot builder
/// without allocating a `String` per field. [`CertificateRecord::as_ref`] gives one for an
/// owned record; the builder stores both the same way.
#[derive(Clone, Copy, Debug)]
pub struct CertificateRef<'a> {
    /// `证书编号`: the 16 digits.
    pub number: CertNumber,
    /// Version suffix of `证书编号`, if any.
    pub suffix: Option<[u8; 2]>,
    /// `证书状态`.
    pub status: Status,
    /// `产品类别代码`.
    pub product_code: ProductCode,
    /// `产品名称`.
    pub product_name: &'a str,
    /// `型号规格`.
    pub models: Models<'a>,
    /// `认证委托人名称`.
    pub applicant: &'a str,
    /// `生产者名称`.
    pub producer: &'a str,
    /// `生产企业名称`.
    pub factory: &'a str,
    /// `发证日期`.
    pub issued: Day,
    /// `证书到期日期`.
    pub expires: Day,
    /// `状态变更日期`.
    pub status_changed: Option<Day>,
    /// `状态变更原因` (empty when none).
    pub status_reason: &'a str,
    /// `认证机构`.
    pub body_name: &'a str,
}

/// The models of a borrowed certificate: the `型号规格` field as written (split with
/// [`split_models`](crate::split_models)), or models already split.
#[derive(Clone, Copy, Debug)]
pub enum Models<'a> {
    /// The field's text, not yet split.
    Field(&'a str),
    /// Models already split, trimmed.
    Split(&'a [String]),
}

impl<'a> Models<'a> {
    /// Each model, trimmed, blanks skipped: what [`CertificateRecord::models`] holds.
    pub fn iter(self) -> impl Iterator<Item = &'a str> {
        let (field, split) = match self {
            Models::Field(f) => (Some(f), None),
            Models::Split(s) => (None, Some(s)),
        };
        field
            .into_iter()
            .flat_map(crate::split_models)
            .chain(split.into_iter().flatten().map(String::as_str))
    }
}

impl CertificateRecord {
    /// The record, borrowed.
    pub fn as_ref(&self) -> CertificateRef<'_> {
        CertificateRef {
            number: self.number,
            suffix: self.suffix,
            status: self.status,
            product_code: self.product_code,
            product_name: &self.product_name,
            models: Models::Split(&self.models),
            applicant: &self.applicant,
            producer: &self.producer,
            factory: &self.factory,
            issued: self.issued,
            expires: self.expires,
            status_changed: self.status_changed,
            status_reason: &self.status_reason,
            body_name: &self.body_name,
        }
    }
}
