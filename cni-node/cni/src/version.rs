//! CNI spec versions we speak.

/// A supported spec version. Anything older than 0.3.0 uses a different result format and is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.3.0
    V0_3_0,
    /// 0.3.1 (kindnet's and go-cni's loopback version)
    V0_3_1,
    /// 0.4.0, the first with CHECK and DEL `prevResult`
    V0_4_0,
    /// 1.0.0
    V1_0_0,
    /// 1.1.0, the first with STATUS and GC
    V1_1_0,
}

/// `supportedVersions` of our VERSION answer, lowest first.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

impl CniVersion {
    /// The newest version we implement.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// Parse a `cniVersion` value; `None` for versions we do not speak.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "0.3.0" => CniVersion::V0_3_0,
            "0.3.1" => CniVersion::V0_3_1,
            "0.4.0" => CniVersion::V0_4_0,
            "1.0.0" => CniVersion::V1_0_0,
            "1.1.0" => CniVersion::V1_1_0,
            _ => return None,
        })
    }

    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Whether results carry the pre-1.0 `ips[].version` field.
    pub fn legacy_result(self) -> bool {
        self < CniVersion::V1_0_0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_version_round_trips() {
        for s in SUPPORTED {
            assert_eq!(CniVersion::parse(s).map(CniVersion::as_str), Some(*s));
        }
        for bad in ["", "0.1.0", "0.2.0", "1.1", "2.0.0", "1.1.0 "] {
            assert_eq!(CniVersion::parse(bad), None, "{bad:?}");
        }
    }
}
