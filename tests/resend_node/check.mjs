// Issue 21: the official Resend Node SDK (`resend` on npm) against Mailroom's /resend, configured the
// way an application is: RESEND_BASE_URL (the Node SDK's base URL variable) and the API key.
// Run by tests/test_resend_node.py against the real stack; any failed check exits non-zero.
//
//   node check.mjs webhooks   webhooks create/get/list/update/rotate/remove, and resend.webhooks.verify
//                             on real deliveries (email.sent, email.delivered) received by a local
//                             HTTP server here, before and after a rotation (both secrets verify)
//   node check.mjs emails     emails.send, emails.get, batch.send (the routes of /resend/emails)
//
// Env: RESEND_BASE_URL, RESEND_API_KEY, MAILROOM_FROM (a sender on a verified domain), and for
// `webhooks` MAILROOM_API_URL (the email of the webhooks check is sent through /v1/emails).
import assert from "node:assert/strict";
import http from "node:http";
import { Resend } from "resend";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set`);
  return value;
};
const resend = new Resend(env("RESEND_API_KEY"));
const from = env("MAILROOM_FROM");
const TO = "success@simulator.amazonses.com";

// The SDK answers { data, error } and never throws for an API error.
const ok = ({ data, error }, what) => {
  assert.equal(error, null, `${what}: ${JSON.stringify(error)}`);
  return data;
};

async function waitFor(fn, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const got = await fn();
    if (got) return got;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function receiver() {
  const posts = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      posts.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
      res.writeHead(200).end();
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, posts, url: `http://127.0.0.1:${server.address().port}/hooks` })),
  );
}

const verify = (post, webhookSecret) =>
  resend.webhooks.verify({
    payload: post.body,
    headers: { id: post.headers["svix-id"], timestamp: post.headers["svix-timestamp"], signature: post.headers["svix-signature"] },
    webhookSecret,
  });

async function sendV1(subject) {
  const resp = await fetch(`${env("MAILROOM_API_URL")}/v1/emails`, {
    method: "POST",
    headers: { authorization: `Bearer ${env("RESEND_API_KEY")}`, "content-type": "application/json" },
    body: JSON.stringify({ from, to: TO, subject, text: "the body is not in webhooks" }),
  });
  assert.equal(resp.status, 202, await resp.clone().text());
  return (await resp.json()).id;
}

async function webhooks() {
  const rx = await receiver();
  try {
    const created = ok(await resend.webhooks.create({ endpoint: rx.url, events: ["email.sent", "email.delivered"] }), "create");
    assert.equal(created.object, "webhook");
    assert.match(created.signing_secret, /^whsec_/);
    const id = created.id;
    const got = ok(await resend.webhooks.get(id), "get");
    assert.deepEqual([got.endpoint, got.status, got.events], [rx.url, "enabled", ["email.sent", "email.delivered"]]);
    const listed = ok(await resend.webhooks.list(), "list");
    assert.equal(listed.object, "list");
    assert.deepEqual(listed.data.map((w) => w.id), [id]);

    const emailId = await sendV1("From the Node check");
    const arrived = (type, email) =>
      rx.posts.filter((p) => {
        const body = JSON.parse(p.body);
        return body.type === type && body.data.email_id === email;
      });
    for (const type of ["email.sent", "email.delivered"]) {
      const [post] = await waitFor(() => arrived(type, emailId).length && arrived(type, emailId), type);
      const event = verify(post, created.signing_secret);
      assert.equal(event.type, type);
      assert.deepEqual(Object.keys(event).sort(), ["created_at", "data", "type"]);
      assert.equal(event.data.email_id, emailId);
      assert.equal(event.data.subject, "From the Node check");
      assert.deepEqual(event.data.to, [TO]);
      assert.ok(!post.body.includes("the body is not in webhooks"));
      assert.throws(() => verify(post, "whsec_" + Buffer.from("not the secret 123456").toString("base64")));
    }

    ok(await resend.webhooks.update(id, { status: "disabled" }), "update");
    assert.equal(ok(await resend.webhooks.get(id), "get").status, "disabled");
    ok(await resend.webhooks.update(id, { status: "enabled", events: ["email.sent"] }), "update");
    const enabled = ok(await resend.webhooks.get(id), "get");
    assert.deepEqual([enabled.status, enabled.events], ["enabled", ["email.sent"]]);

    const rotated = ok(await resend.webhooks.rotateSigningSecret(id), "rotate");
    assert.notEqual(rotated.signing_secret, created.signing_secret);
    const second = await sendV1("After the rotation");
    const [post] = await waitFor(() => arrived("email.sent", second).length && arrived("email.sent", second), "sent after rotation");
    assert.equal(verify(post, rotated.signing_secret).data.email_id, second);
    assert.equal(verify(post, created.signing_secret).data.email_id, second);

    const bad = await resend.webhooks.create({ endpoint: rx.url, events: ["contact.created"] });
    assert.equal(bad.data, null);
    assert.equal(bad.error.name, "validation_error");

    const removed = ok(await resend.webhooks.remove(id), "remove");
    assert.deepEqual([removed.id, removed.deleted], [id, true]);
    const gone = await resend.webhooks.get(id);
    assert.equal(gone.error.name, "not_found");
    return { webhook: id, verified: rx.posts.length };
  } finally {
    rx.server.close();
  }
}

async function emails() {
  const sent = ok(await resend.emails.send({ from, to: [TO], subject: "Node send", html: "<p>hi</p>", tags: [{ name: "sdk", value: "node" }] }), "send");
  assert.match(sent.id, /^msg_/);
  const got = ok(await resend.emails.get(sent.id), "get");
  assert.deepEqual([got.object, got.id, got.subject], ["email", sent.id, "Node send"]);
  const batch = ok(
    await resend.batch.send([
      { from, to: [TO], subject: "Batch 1", text: "one" },
      { from, to: [TO], subject: "Batch 2", text: "two" },
    ]),
    "batch",
  );
  assert.equal(batch.data.length, 2);
  const invalid = await resend.emails.send({ from, to: ["not an address"], subject: "x", text: "x" });
  assert.equal(invalid.error.name, "validation_error");
  return { email: sent.id, batch: batch.data.map((e) => e.id) };
}

const checks = { webhooks, emails };
const mode = process.argv[2];
assert.ok(mode in checks, `usage: node check.mjs ${Object.keys(checks).join("|")}`);
console.log(JSON.stringify({ mode, ...(await checks[mode]()) }));
