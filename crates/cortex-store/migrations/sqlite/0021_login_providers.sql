-- Login providers (issue 14 point 2, SPEC §11.1, Appendix B "Login providers"): the role a user created by
-- auto-signup gets (SPEC default `viewer`; never `none`, which cannot sign in). The tables themselves
-- (login_provider, user_identity, oauth_state) exist since 0011.
ALTER TABLE login_provider ADD COLUMN signup_role TEXT NOT NULL DEFAULT 'viewer'
    CHECK (signup_role IN ('admin', 'approver', 'operator', 'viewer'));
