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
