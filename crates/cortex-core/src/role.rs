//! Principal roles. Each role includes every permission of the roles below it (SPEC §17.1).

crate::string_enum! {
    /// Ordered from least to most privileged, so `>=` answers "may this principal do X".
    pub enum Role {
        /// Channel-only people: may hold agent grants but never call the API.
        None = "none",
        Viewer = "viewer",
        Operator = "operator",
        Approver = "approver",
        Admin = "admin",
    }
}

impl Role {
    /// True when this role includes `required`.
    pub fn includes(self, required: Role) -> bool {
        self >= required
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn roles_nest() {
        assert!(Role::Admin.includes(Role::Approver));
        assert!(Role::Approver.includes(Role::Operator));
        assert!(Role::Operator.includes(Role::Viewer));
        assert!(!Role::Viewer.includes(Role::Operator));
        assert!(!Role::None.includes(Role::Viewer));
        assert_eq!("ADMIN".parse::<Role>(), Ok(Role::Admin));
    }
}
