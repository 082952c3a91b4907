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
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql,
    'role IN (''admin'', ''approver'', ''operator'', ''viewer'', ''none'')',
    '(role = ''admin'' OR role = ''approver'' OR role = ''operator'' OR role = ''viewer'' OR role = ''none'')')
WHERE type = 'table' AND name = 'user_account';
UPDATE sqlite_schema SET sql = replace(sql,
    'role IN (''admin'', ''approver'', ''operator'', ''viewer'')',
    '(role = ''admin'' OR role = ''approver'' OR role = ''operator'' OR role = ''viewer'')')
WHERE type = 'table' AND name = 'api_key';
UPDATE sqlite_schema SET sql = replace(sql,
    'source IN (''bootstrap'', ''env'', ''api'')',
    '(source = ''bootstrap'' OR source = ''env'' OR source = ''api'')')
WHERE type = 'table' AND name = 'api_key';
UPDATE sqlite_schema SET sql = replace(sql,
    'actor_type IN (''user'', ''api_key'', ''agent'', ''system'', ''channel_user'')',
    '(actor_type = ''user'' OR actor_type = ''api_key'' OR actor_type = ''agent'' OR actor_type = ''system'' OR actor_type = ''channel_user'')')
WHERE type = 'table' AND name = 'audit_log';
UPDATE sqlite_schema SET sql = replace(sql,
    'access_mode IN (''open'', ''bound_chats'', ''allowlist'', ''approval_queue'')',
    '(access_mode = ''open'' OR access_mode = ''bound_chats'' OR access_mode = ''allowlist'' OR access_mode = ''approval_queue'')')
WHERE type = 'table' AND name = 'agent';
UPDATE sqlite_schema SET sql = replace(sql,
    'status IN (''active'', ''disabled'', ''archived'')',
    '(status = ''active'' OR status = ''disabled'' OR status = ''archived'')')
WHERE type = 'table' AND name = 'agent';
UPDATE sqlite_schema SET sql = replace(sql,
    'health_state IN (''healthy'', ''degraded'', ''quarantined'')',
    '(health_state = ''healthy'' OR health_state = ''degraded'' OR health_state = ''quarantined'')')
WHERE type = 'table' AND name = 'agent';
UPDATE sqlite_schema SET sql = replace(sql,
    'status IN (''active'', ''idle'', ''archived'', ''closed'')',
    '(status = ''active'' OR status = ''idle'' OR status = ''archived'' OR status = ''closed'')')
WHERE type = 'table' AND name = 'session';
UPDATE sqlite_schema SET sql = replace(sql,
    'role IN (''user'', ''assistant'', ''system'', ''tool'')',
    '(role = ''user'' OR role = ''assistant'' OR role = ''system'' OR role = ''tool'')')
WHERE type = 'table' AND name = 'session_message';
UPDATE sqlite_schema SET sql = replace(sql,
    'approval IN (''never'', ''always'', ''risk'')',
    '(approval = ''never'' OR approval = ''always'' OR approval = ''risk'')')
WHERE type = 'table' AND name = 'agent_tool_policy';
UPDATE sqlite_schema SET sql = replace(sql,
    'risk IN (''p0'', ''p1'', ''p2'', ''p3'')',
    '(risk = ''p0'' OR risk = ''p1'' OR risk = ''p2'' OR risk = ''p3'')')
WHERE type = 'table' AND name = 'agent_tool_policy';
UPDATE sqlite_schema SET sql = replace(sql,
    'state IN (''requested'', ''awaiting_approval'', ''running'', ''completed'', ''failed'', ''rejected'', ''interrupted'')',
    '(state = ''requested'' OR state = ''awaiting_approval'' OR state = ''running'' OR state = ''completed'' OR state = ''failed'' OR state = ''rejected'' OR state = ''interrupted'')')
WHERE type = 'table' AND name = 'tool_call';
UPDATE sqlite_schema SET sql = replace(sql,
    'action_type IN (''tool'', ''job'', ''request'')',
    '(action_type = ''tool'' OR action_type = ''job'' OR action_type = ''request'')')
WHERE type = 'table' AND name = 'approval_request';
UPDATE sqlite_schema SET sql = replace(sql,
    'risk IN (''p0'', ''p1'', ''p2'', ''p3'')',
    '(risk = ''p0'' OR risk = ''p1'' OR risk = ''p2'' OR risk = ''p3'')')
WHERE type = 'table' AND name = 'approval_request';
UPDATE sqlite_schema SET sql = replace(sql,
    'status IN (''pending'', ''approved'', ''rejected'', ''expired'')',
    '(status = ''pending'' OR status = ''approved'' OR status = ''rejected'' OR status = ''expired'')')
WHERE type = 'table' AND name = 'approval_request';
UPDATE sqlite_schema SET sql = replace(sql,
    'decided_via IN (''api'', ''dashboard'', ''token'', ''telegram'', ''discord'', ''slack'', ''whatsapp'', ''policy'')',
    '(decided_via = ''api'' OR decided_via = ''dashboard'' OR decided_via = ''token'' OR decided_via = ''telegram'' OR decided_via = ''discord'' OR decided_via = ''slack'' OR decided_via = ''whatsapp'' OR decided_via = ''policy'')')
WHERE type = 'table' AND name = 'approval_request';
UPDATE sqlite_schema SET sql = replace(sql,
    'event IN (''created'', ''notified'', ''notification_failed'', ''reminder_sent'', ''escalated'', ''decided'', ''unauthorized_attempt'', ''expired'', ''executed'')',
    '(event = ''created'' OR event = ''notified'' OR event = ''notification_failed'' OR event = ''reminder_sent'' OR event = ''escalated'' OR event = ''decided'' OR event = ''unauthorized_attempt'' OR event = ''expired'' OR event = ''executed'')')
WHERE type = 'table' AND name = 'approval_audit';
UPDATE sqlite_schema SET sql = replace(sql,
    'state IN (''queued'', ''injected'', ''expired'')',
    '(state = ''queued'' OR state = ''injected'' OR state = ''expired'')')
WHERE type = 'table' AND name = 'steering_message';
UPDATE sqlite_schema SET sql = replace(sql,
    'kind IN (''llm'', ''embedding'', ''search'', ''tool_secret'', ''speech'')',
    '(kind = ''llm'' OR kind = ''embedding'' OR kind = ''search'' OR kind = ''tool_secret'' OR kind = ''speech'')')
WHERE type = 'table' AND name = 'provider_credential';
UPDATE sqlite_schema SET sql = replace(sql,
    'status IN (''active'', ''error'', ''disabled'')',
    '(status = ''active'' OR status = ''error'' OR status = ''disabled'')')
WHERE type = 'table' AND name = 'provider_credential';
UPDATE sqlite_schema SET sql = replace(sql,
    'status IN (''pending'', ''active'', ''degraded'', ''error'', ''disabled'')',
    '(status = ''pending'' OR status = ''active'' OR status = ''degraded'' OR status = ''error'' OR status = ''disabled'')')
WHERE type = 'table' AND name = 'mcp_server';
UPDATE sqlite_schema SET sql = replace(sql,
    'risk IN (''p0'', ''p1'', ''p2'', ''p3'')',
    '(risk = ''p0'' OR risk = ''p1'' OR risk = ''p2'' OR risk = ''p3'')')
WHERE type = 'table' AND name = 'webhook_tool';
UPDATE sqlite_schema SET sql = replace(sql,
    'type IN (''fact'', ''preference'', ''event'', ''system_rule'', ''lesson'', ''relationship'')',
    '(type = ''fact'' OR type = ''preference'' OR type = ''event'' OR type = ''system_rule'' OR type = ''lesson'' OR type = ''relationship'')')
WHERE type = 'table' AND name = 'memory_record';
UPDATE sqlite_schema SET sql = replace(sql,
    'source IN (''manual'', ''extraction'', ''tool'', ''markdown'')',
    '(source = ''manual'' OR source = ''extraction'' OR source = ''tool'' OR source = ''markdown'')')
WHERE type = 'table' AND name = 'memory_record';
UPDATE sqlite_schema SET sql = replace(sql,
    'status IN (''pending'', ''scheduled'', ''running'', ''waiting_for_approval'', ''completed'', ''failed'', ''timed_out'', ''retrying'', ''dead_letter'')',
    '(status = ''pending'' OR status = ''scheduled'' OR status = ''running'' OR status = ''waiting_for_approval'' OR status = ''completed'' OR status = ''failed'' OR status = ''timed_out'' OR status = ''retrying'' OR status = ''dead_letter'')')
WHERE type = 'table' AND name = 'job';
UPDATE sqlite_schema SET sql = replace(sql,
    'actor IN (''agent'', ''operator'', ''system'')',
    '(actor = ''agent'' OR actor = ''operator'' OR actor = ''system'')')
WHERE type = 'table' AND name = 'agent_event';
UPDATE sqlite_schema SET sql = replace(sql,
    'provider IN (''github'', ''google'', ''oidc'')',
    '(provider = ''github'' OR provider = ''google'' OR provider = ''oidc'')')
WHERE type = 'table' AND name = 'login_provider';
UPDATE sqlite_schema SET sql = replace(sql,
    'signup_role IN (''admin'', ''approver'', ''operator'', ''viewer'')',
    '(signup_role = ''admin'' OR signup_role = ''approver'' OR signup_role = ''operator'' OR signup_role = ''viewer'')')
WHERE type = 'table' AND name = 'login_provider';
UPDATE sqlite_schema SET sql = replace(sql,
    'provider IN (''github'', ''google'', ''oidc'')',
    '(provider = ''github'' OR provider = ''google'' OR provider = ''oidc'')')
WHERE type = 'table' AND name = 'user_identity';
UPDATE sqlite_schema SET sql = replace(sql,
    'type IN (''telegram'', ''discord'', ''slack'', ''whatsapp'')',
    '(type = ''telegram'' OR type = ''discord'' OR type = ''slack'' OR type = ''whatsapp'')')
WHERE type = 'table' AND name = 'channel';
UPDATE sqlite_schema SET sql = replace(sql,
    'channel_type IN (''telegram'', ''discord'', ''slack'', ''whatsapp'')',
    '(channel_type = ''telegram'' OR channel_type = ''discord'' OR channel_type = ''slack'' OR channel_type = ''whatsapp'')')
WHERE type = 'table' AND name = 'channel_binding';
UPDATE sqlite_schema SET sql = replace(sql,
    'origin IN (''open'', ''bound_chat'', ''invite'', ''pairing'', ''approval'')',
    '(origin = ''open'' OR origin = ''bound_chat'' OR origin = ''invite'' OR origin = ''pairing'' OR origin = ''approval'')')
WHERE type = 'table' AND name = 'agent_grant';
UPDATE sqlite_schema SET sql = replace(sql,
    'status IN (''pending'', ''approved'', ''denied'')',
    '(status = ''pending'' OR status = ''approved'' OR status = ''denied'')')
WHERE type = 'table' AND name = 'access_request';
UPDATE sqlite_schema SET sql = replace(sql,
    'status IN (''received'', ''routed'', ''refused'', ''ignored'', ''failed'')',
    '(status = ''received'' OR status = ''routed'' OR status = ''refused'' OR status = ''ignored'' OR status = ''failed'')')
WHERE type = 'table' AND name = 'inbound_message';
UPDATE sqlite_schema SET sql = replace(sql,
    'status IN (''queued'', ''sending'', ''delivered'', ''failed'')',
    '(status = ''queued'' OR status = ''sending'' OR status = ''delivered'' OR status = ''failed'')')
WHERE type = 'table' AND name = 'outbox';
UPDATE sqlite_schema SET sql = replace(sql,
    'scope_kind IN (''agent'', ''api_key'', ''session'', ''job'')',
    '(scope_kind = ''agent'' OR scope_kind = ''api_key'' OR scope_kind = ''session'' OR scope_kind = ''job'')')
WHERE type = 'table' AND name = 'budget_ledger';

PRAGMA writable_schema = RESET;
