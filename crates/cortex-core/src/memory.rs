//! Memory vocabulary (SPEC §9.1, §3.4): record types with their recency half-lives, and where a record
//! came from. The wire and the database share the type names; the source differs in one name (records
//! created through the API are stored as `manual`, the name the first schema used, and shown as `api`).

crate::string_enum! {
    /// What kind of thing a memory states; decides how fast it fades (SPEC §9.1).
    pub enum MemoryType {
        Fact = "fact",
        Preference = "preference",
        Event = "event",
        SystemRule = "system_rule",
        Lesson = "lesson",
        Relationship = "relationship",
    }
}

impl MemoryType {
    /// Days after which recency halves; `None` for standing rules, which never fade.
    pub fn half_life_days(self) -> Option<f64> {
        match self {
            Self::Fact | Self::Lesson | Self::Relationship => Some(365.0),
            Self::Preference => Some(180.0),
            Self::Event => Some(14.0),
            Self::SystemRule => None,
        }
    }
}

crate::string_enum! {
    /// Who wrote a record (Appendix B wire names).
    pub enum MemorySource {
        Api = "api",
        Tool = "tool",
        Extraction = "extraction",
        Markdown = "markdown",
    }
}

impl MemorySource {
    /// The name in `memory_record.source`.
    pub fn db_name(self) -> &'static str {
        match self {
            Self::Api => "manual",
            other => other.as_str(),
        }
    }

    /// Reads `memory_record.source`.
    pub fn from_db(text: &str) -> Option<Self> {
        match text {
            "manual" => Some(Self::Api),
            other => other.parse().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_lives_follow_the_spec() {
        assert_eq!(MemoryType::Event.half_life_days(), Some(14.0));
        assert_eq!(MemoryType::Preference.half_life_days(), Some(180.0));
        assert_eq!(MemoryType::Fact.half_life_days(), Some(365.0));
        assert_eq!(MemoryType::SystemRule.half_life_days(), None);
    }

    #[test]
    fn sources_round_trip_through_the_database_name() {
        for source in MemorySource::ALL {
            assert_eq!(MemorySource::from_db(source.db_name()), Some(*source));
        }
        assert_eq!(MemorySource::Api.db_name(), "manual");
    }
}
