-- CHECK constraints that list three or more values with `IN` become `=` comparisons joined by `OR`, with the
-- same meaning (NULL still passes, any other value outside the list still fails). SQLite evaluates an `IN` list
-- of more than two constants by building a temporary B-tree of the list, and a CHECK does that for every row
-- it checks: each job, event, session and message written built one to four of them (issue 17;
-- docs/PERFORMANCE.md section 21). The `OR` form compares in place.
--
-- SQLite cannot alter a constraint, and rebuilding every table for it would copy all their rows. A constraint
-- that does not change what is stored may instead be edited in `sqlite_schema` itself (the procedure of
-- https://www.sqlite.org/lang_altertable.html, "Making Other Kinds Of Table Schema Changes"): every row that
-- passed the old CHECK passes the new one. `RESET` makes this connection (the store's only writer) read the
-- edited schema. Other connections keep the old text until they next load the schema; it means the same.
CREATE TEMP TABLE check_list (table_name TEXT NOT NULL, nth INTEGER NOT NULL, old_text TEXT NOT NULL, new_text TEXT NOT NULL);
INSERT INTO check_list (table_name, nth, old_text, new_text) VALUES
    ('user_account', 1, 'role IN (''admin'', ''approver'', ''operator'', ''viewer'', ''none'')',
     '(role = ''admin'' OR role = ''approver'' OR role = ''operator'' OR role = ''viewer'' OR role = ''none'')'),
    ('api_key', 1, 'role IN (''admin'', ''approver'', ''operator'', ''viewer'')',
     '(role = ''admin'' OR role = ''approver'' OR role = ''operator'' OR role = ''viewer'')'),
    ('api_key', 2, 'source IN (''bootstrap'', ''env'', ''api'')',
     '(source = ''bootstrap'' OR source = ''env'' OR source = ''api'')'),
    ('audit_log', 1, 'actor_type IN (''user'', ''api_key'', ''agent'', ''system'', ''channel_user'')',
     '(actor_type = ''user'' OR actor_type = ''api_key'' OR actor_type = ''agent'' OR actor_type = ''system'' OR actor_type = ''channel_user'')'),
    ('agent', 1, 'access_mode IN (''open'', ''bound_chats'', ''allowlist'', ''approval_queue'')',
     '(access_mode = ''open'' OR access_mode = ''bound_chats'' OR access_mode = ''allowlist'' OR access_mode = ''approval_queue'')'),
    ('agent', 2, 'status IN (''active'', ''disabled'', ''archived'')',
     '(status = ''active'' OR status = ''disabled'' OR status = ''archived'')'),
    ('agent', 3, 'health_state IN (''healthy'', ''degraded'', ''quarantined'')',
     '(health_state = ''healthy'' OR health_state = ''degraded'' OR health_state = ''quarantined'')'),
    ('session', 1, 'status IN (''active'', ''idle'', ''archived'', ''closed'')',
     '(status = ''active'' OR status = ''idle'' OR status = ''archived'' OR status = ''closed'')'),
    ('session_message', 1, 'role IN (''user'', ''assistant'', ''system'', ''tool'')',
     '(role = ''user'' OR role = ''assistant'' OR role = ''system'' OR role = ''tool'')'),
    ('agent_tool_policy', 1, 'approval IN (''never'', ''always'', ''risk'')',
     '(approval = ''never'' OR approval = ''always'' OR approval = ''risk'')'),
    ('agent_tool_policy', 2, 'risk IN (''p0'', ''p1'', ''p2'', ''p3'')',
     '(risk = ''p0'' OR risk = ''p1'' OR risk = ''p2'' OR risk = ''p3'')'),
    ('tool_call', 1, 'state IN (''requested'', ''awaiting_approval'', ''running'', ''completed'', ''failed'', ''rejected'', ''interrupted'')',
     '(state = ''requested'' OR state = ''awaiting_approval'' OR state = ''running'' OR state = ''completed'' OR state = ''failed'' OR state = ''rejected'' OR state = ''interrupted'')'),
    ('approval_request', 1, 'action_type IN (''tool'', ''job'', ''request'')',
     '(action_type = ''tool'' OR action_type = ''job'' OR action_type = ''request'')'),
    ('approval_request', 2, 'risk IN (''p0'', ''p1'', ''p2'', ''p3'')',
     '(risk = ''p0'' OR risk = ''p1'' OR risk = ''p2'' OR risk = ''p3'')'),
    ('approval_request', 3, 'status IN (''pending'', ''approved'', ''rejected'', ''expired'')',
     '(status = ''pending'' OR status = ''approved'' OR status = ''rejected'' OR status = ''expired'')'),
    ('approval_request', 4, 'decided_via IN (''api'', ''dashboard'', ''token'', ''telegram'', ''discord'', ''slack'', ''whatsapp'', ''policy'')',
     '(decided_via = ''api'' OR decided_via = ''dashboard'' OR decided_via = ''token'' OR decided_via = ''telegram'' OR decided_via = ''discord'' OR decided_via = ''slack'' OR decided_via = ''whatsapp'' OR decided_via = ''policy'')'),
    ('approval_audit', 1, 'event IN (''created'', ''notified'', ''notification_failed'', ''reminder_sent'', ''escalated'', ''decided'', ''unauthorized_attempt'', ''expired'', ''executed'')',
     '(event = ''created'' OR event = ''notified'' OR event = ''notification_failed'' OR event = ''reminder_sent'' OR event = ''escalated'' OR event = ''decided'' OR event = ''unauthorized_attempt'' OR event = ''expired'' OR event = ''executed'')'),
    ('steering_message', 1, 'state IN (''queued'', ''injected'', ''expired'')',
     '(state = ''queued'' OR state = ''injected'' OR state = ''expired'')'),
    ('provider_credential', 1, 'kind IN (''llm'', ''embedding'', ''search'', ''tool_secret'', ''speech'')',
     '(kind = ''llm'' OR kind = ''embedding'' OR kind = ''search'' OR kind = ''tool_secret'' OR kind = ''speech'')'),
    ('provider_credential', 2, 'status IN (''active'', ''error'', ''disabled'')',
     '(status = ''active'' OR status = ''error'' OR status = ''disabled'')'),
    ('mcp_server', 1, 'status IN (''pending'', ''active'', ''degraded'', ''error'', ''disabled'')',
     '(status = ''pending'' OR status = ''active'' OR status = ''degraded'' OR status = ''error'' OR status = ''disabled'')'),
    ('webhook_tool', 1, 'risk IN (''p0'', ''p1'', ''p2'', ''p3'')',
     '(risk = ''p0'' OR risk = ''p1'' OR risk = ''p2'' OR risk = ''p3'')'),
    ('memory_record', 1, 'type IN (''fact'', ''preference'', ''event'', ''system_rule'', ''lesson'', ''relationship'')',
     '(type = ''fact'' OR type = ''preference'' OR type = ''event'' OR type = ''system_rule'' OR type = ''lesson'' OR type = ''relationship'')'),
    ('memory_record', 2, 'source IN (''manual'', ''extraction'', ''tool'', ''markdown'')',
     '(source = ''manual'' OR source = ''extraction'' OR source = ''tool'' OR source = ''markdown'')'),
    ('job', 1, 'status IN (''pending'', ''scheduled'', ''running'', ''waiting_for_approval'', ''completed'', ''failed'', ''timed_out'', ''retrying'', ''dead_letter'')',
     '(status = ''pending'' OR status = ''scheduled'' OR status = ''running'' OR status = ''waiting_for_approval'' OR status = ''completed'' OR status = ''failed'' OR status = ''timed_out'' OR status = ''retrying'' OR status = ''dead_letter'')'),
    ('agent_event', 1, 'actor IN (''agent'', ''operator'', ''system'')',
     '(actor = ''agent'' OR actor = ''operator'' OR actor = ''system'')'),
    ('login_provider', 1, 'provider IN (''github'', ''google'', ''oidc'')',
     '(provider = ''github'' OR provider = ''google'' OR provider = ''oidc'')'),
    ('login_provider', 2, 'signup_role IN (''admin'', ''approver'', ''operator'', ''viewer'')',
     '(signup_role = ''admin'' OR signup_role = ''approver'' OR signup_role = ''operator'' OR signup_role = ''viewer'')'),
    ('user_identity', 1, 'provider IN (''github'', ''google'', ''oidc'')',
     '(provider = ''github'' OR provider = ''google'' OR provider = ''oidc'')'),
    ('channel', 1, 'type IN (''telegram'', ''discord'', ''slack'', ''whatsapp'')',
     '(type = ''telegram'' OR type = ''discord'' OR type = ''slack'' OR type = ''whatsapp'')'),
    ('channel_binding', 1, 'channel_type IN (''telegram'', ''discord'', ''slack'', ''whatsapp'')',
     '(channel_type = ''telegram'' OR channel_type = ''discord'' OR channel_type = ''slack'' OR channel_type = ''whatsapp'')'),
    ('agent_grant', 1, 'origin IN (''open'', ''bound_chat'', ''invite'', ''pairing'', ''approval'')',
     '(origin = ''open'' OR origin = ''bound_chat'' OR origin = ''invite'' OR origin = ''pairing'' OR origin = ''approval'')'),
    ('access_request', 1, 'status IN (''pending'', ''approved'', ''denied'')',
     '(status = ''pending'' OR status = ''approved'' OR status = ''denied'')'),
    ('inbound_message', 1, 'status IN (''received'', ''routed'', ''refused'', ''ignored'', ''failed'')',
     '(status = ''received'' OR status = ''routed'' OR status = ''refused'' OR status = ''ignored'' OR status = ''failed'')'),
    ('outbox', 1, 'status IN (''queued'', ''sending'', ''delivered'', ''failed'')',
     '(status = ''queued'' OR status = ''sending'' OR status = ''delivered'' OR status = ''failed'')'),
    ('budget_ledger', 1, 'scope_kind IN (''agent'', ''api_key'', ''session'', ''job'')',
     '(scope_kind = ''agent'' OR scope_kind = ''api_key'' OR scope_kind = ''session'' OR scope_kind = ''job'')');

-- A table with several lists gets one replacement per statement, its first list first.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = (SELECT replace(sql, old_text, new_text) FROM check_list WHERE table_name = name AND nth = 1)
WHERE type = 'table' AND name IN (SELECT table_name FROM check_list WHERE nth = 1);
UPDATE sqlite_schema SET sql = (SELECT replace(sql, old_text, new_text) FROM check_list WHERE table_name = name AND nth = 2)
WHERE type = 'table' AND name IN (SELECT table_name FROM check_list WHERE nth = 2);
UPDATE sqlite_schema SET sql = (SELECT replace(sql, old_text, new_text) FROM check_list WHERE table_name = name AND nth = 3)
WHERE type = 'table' AND name IN (SELECT table_name FROM check_list WHERE nth = 3);
UPDATE sqlite_schema SET sql = (SELECT replace(sql, old_text, new_text) FROM check_list WHERE table_name = name AND nth = 4)
WHERE type = 'table' AND name IN (SELECT table_name FROM check_list WHERE nth = 4);
PRAGMA writable_schema = RESET;
DROP TABLE check_list;
