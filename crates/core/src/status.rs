//! The five certificate statuses of the register (`证书状态`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A certificate's status. The discriminants are the register's codes `01`..`05`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Status {
    /// `有效` (01).
    Valid = 1,
    /// `暂停` (02).
    Suspended = 2,
    /// `撤销` (03).
    Revoked = 3,
    /// `注销` (04).
    Cancelled = 4,
    /// `过期失效` (05).
    Expired = 5,
}

/// A status that is neither one of the five words nor one of their codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}: expected 有效, 暂停, 撤销, 注销, 过期失效 or 01..05")]
pub struct StatusError(pub String);

impl Status {
    /// All statuses, in code order.
    pub const ALL: [Status; 5] = [
        Status::Valid,
        Status::Suspended,
        Status::Revoked,
        Status::Cancelled,
        Status::Expired,
    ];

    /// Reads a status word or code, ignoring surrounding white space.
    pub fn parse(text: &str) -> Result<Self, StatusError> {
        Ok(match text.trim() {
            "有效" | "01" => Status::Valid,
            "暂停" | "02" => Status::Suspended,
            "撤销" | "03" => Status::Revoked,
            "注销" | "04" => Status::Cancelled,
            "过期失效" | "05" => Status::Expired,
            _ => return Err(StatusError(text.to_owned())),
        })
    }

    /// The status for its code 1..=5.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Status::Valid),
            2 => Some(Status::Suspended),
            3 => Some(Status::Revoked),
            4 => Some(Status::Cancelled),
            5 => Some(Status::Expired),
            _ => None,
        }
    }

    /// The register's code, 1..=5.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The register's word for it.
    pub const fn as_chinese(self) -> &'static str {
        match self {
            Status::Valid => "有效",
            Status::Suspended => "暂停",
            Status::Revoked => "撤销",
            Status::Cancelled => "注销",
            Status::Expired => "过期失效",
        }
    }

    /// An upper-case English name, as used on the wire and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "VALID",
            Status::Suspended => "SUSPENDED",
            Status::Revoked => "REVOKED",
            Status::Cancelled => "CANCELLED",
            Status::Expired => "EXPIRED",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_codes_read_the_same_status() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_chinese()).unwrap(), s);
            assert_eq!(Status::parse(&format!("{:02}", s.code())).unwrap(), s);
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        assert_eq!(Status::parse(" 有效 ").unwrap(), Status::Valid);
    }

    #[test]
    fn unknown_statuses_are_refused() {
        for bad in ["", "1", "06", "valid", "有 效", "00"] {
            assert!(Status::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Status::from_code(0), None);
        assert_eq!(Status::from_code(6), None);
    }
}
