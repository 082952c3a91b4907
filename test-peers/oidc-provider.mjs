// A real OpenID Connect provider for the login tests (crates/cortex-api/tests/it/login_providers.rs):
// `oidc-provider` (panva, certified OpenID implementation) with its development login and consent forms.
// It listens on 127.0.0.1 on a free port and prints one JSON line `{"issuer": …}` once ready.
// Env: CLIENT_ID, CLIENT_SECRET, REDIRECT_URI; any login name signs in as that account, whose email is
// `<login>@example.com` (verified unless the login starts with "unverified").
import http from 'node:http';
import Provider from 'oidc-provider';

// stdout carries only the ready line (the test stops reading it); the provider's notices go to stderr.
console.log = (...args) => console.error(...args);
console.info = console.log;

const { CLIENT_ID, CLIENT_SECRET, REDIRECT_URI } = process.env;
if (!CLIENT_ID || !CLIENT_SECRET || !REDIRECT_URI) {
  console.error('CLIENT_ID, CLIENT_SECRET and REDIRECT_URI are required');
  process.exit(2);
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { methods: ['S256'], required: () => true },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    features: { devInteractions: { enabled: true } },
    cookies: { keys: ['cortex-test-cookie-key-not-secret'] },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: `${id}@example.com`, email_verified: !id.startsWith('unverified'), name: id };
        },
      };
    },
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
// Ends with the test that started it (its stdin closes).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
