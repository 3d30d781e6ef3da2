/**
 * The chat servers the Matrix and XMPP transports are tested against start
 * on 127.0.0.1, register users, and carry a message from one user to another.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { type Client, client, type XmlElement, xml } from "@xmpp/client";
import { type ProsodyServer, startProsody } from "../support/prosody.ts";
import { type SynapseServer, startSynapse } from "../support/synapse.ts";

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  const raced = Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  // A wait that a failed test never reached must not fail the file later.
  raced.catch(() => {});
  return raced;
}

describe("Synapse for tests", () => {
  let synapse: SynapseServer | undefined;
  const server = () => synapse ?? assert.fail("Synapse did not start");

  before(async () => {
    synapse = await startSynapse();
  });
  after(async () => {
    await synapse?.stop();
  });

  async function api(token: string, method: string, route: string, body?: unknown) {
    const response = await fetch(`${server().url}/_matrix/client/v3${route}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const json = (await response.json()) as Record<string, any>;
    assert.ok(response.ok, `${method} ${route}: ${response.status} ${JSON.stringify(json)}`);
    return json;
  }

  it("listens on 127.0.0.1 and names users after its server name", async () => {
    assert.match(server().url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const user = await server().register("carol", { admin: true, password: "carol-secret" });
    assert.equal(user.userId, `@carol:${server().serverName}`);
    assert.equal(user.password, "carol-secret");
    const whoami = await api(user.accessToken, "GET", "/account/whoami");
    assert.equal(whoami.user_id, user.userId);
    assert.equal(whoami.device_id, user.deviceId);
  });

  it("carries a room message from one registered user to another", async () => {
    const alice = await server().register("alice");
    const bob = await server().register("bob");
    const { room_id: roomId } = await api(alice.accessToken, "POST", "/createRoom", {
      preset: "private_chat",
      invite: [bob.userId],
    });
    const room = encodeURIComponent(roomId);
    await api(bob.accessToken, "POST", `/join/${room}`, {});
    const { event_id: eventId } = await api(
      alice.accessToken,
      "PUT",
      `/rooms/${room}/send/m.room.message/${randomBytes(8).toString("hex")}`,
      { msgtype: "m.text", body: "hello bob" },
    );

    const deadline = Date.now() + 10_000;
    let since = "";
    let received: Record<string, any> | undefined;
    while (received === undefined && Date.now() < deadline) {
      const sync = await api(
        bob.accessToken,
        "GET",
        `/sync?timeout=2000${since ? `&since=${encodeURIComponent(since)}` : ""}`,
      );
      since = sync.next_batch;
      const events: Record<string, any>[] = sync.rooms?.join?.[roomId]?.timeline?.events ?? [];
      received = events.find((event) => event.event_id === eventId);
    }
    assert.ok(received, "bob's /sync never showed alice's message");
    assert.equal(received.sender, alice.userId);
    assert.equal(received.content.body, "hello bob");
  });
});

describe("Prosody for tests", () => {
  let prosody: ProsodyServer | undefined;
  const clients: Client[] = [];
  const server = () => prosody ?? assert.fail("Prosody did not start");

  before(async () => {
    prosody = await startProsody();
  });
  after(async () => {
    await Promise.allSettled(clients.map((c) => c.stop()));
    await prosody?.stop();
  });

  /** Registers `localpart`, connects it over plain c2s and makes it available. */
  async function online(localpart: string): Promise<{ jid: string; client: Client }> {
    const password = `${localpart}-secret`;
    const jid = await server().register(localpart, password);
    const connection = client({
      service: server().service,
      domain: server().domain,
      username: localpart,
      password,
      resource: "test",
    });
    connection.on("error", () => {});
    // Reconnecting would hide a dropped connection, and after a disconnect its
    // one-second retry timer keeps the test process alive for good.
    connection.reconnect.stop();
    clients.push(connection);
    await within(connection.start(), 10_000, `${jid} to log in`);
    await connection.send(xml("presence"));
    return { jid, client: connection };
  }

  function next(connection: Client, match: (stanza: XmlElement) => boolean, what: string) {
    return within(
      new Promise<XmlElement>((resolve) => {
        const listener = (stanza: XmlElement) => {
          if (!match(stanza)) return;
          connection.off("stanza", listener);
          resolve(stanza);
        };
        connection.on("stanza", listener);
      }),
      10_000,
      what,
    );
  }

  it("carries a chat message from one account to another and archives it", async () => {
    const alice = await online("alice");
    const bob = await online("bob");
    assert.equal(alice.jid, `alice@${server().domain}`);

    const received = next(
      bob.client,
      (s) => s.is("message") && s.getChildText("body") === "hello bob",
      "bob to receive alice's message",
    );
    await alice.client.send(
      xml("message", { to: bob.jid, type: "chat", id: "m1" }, xml("body", {}, "hello bob")),
    );
    const message = await received;
    assert.equal(message.attrs.from, `${alice.jid}/test`);
    // mod_mam stamps what it archives for the recipient (XEP-0359).
    const stanzaId = message.getChild("stanza-id", "urn:xmpp:sid:0");
    assert.equal(stanzaId?.attrs.by, bob.jid);

    const archived = next(
      bob.client,
      (s) => s.is("message") && s.getChild("result", "urn:xmpp:mam:2") !== undefined,
      "bob's archive to return the message",
    );
    await bob.client.send(
      xml(
        "iq",
        { type: "set", id: "mam1" },
        xml("query", { xmlns: "urn:xmpp:mam:2", queryid: "q1" }),
      ),
    );
    const result = (await archived).getChild("result", "urn:xmpp:mam:2");
    assert.equal(result?.attrs.id, stanzaId?.attrs.id);
    const forwarded = result?.getChild("forwarded", "urn:xmpp:forward:0");
    assert.equal(forwarded?.getChild("message")?.getChildText("body"), "hello bob");
  });

  it("runs rooms on its MUC component with real JIDs visible and an archive", async () => {
    const alice = await online("amy");
    const bob = await online("ben");
    const room = `lobby@${server().mucDomain}`;
    const muc = "http://jabber.org/protocol/muc";
    const mucUser = `${muc}#user`;

    // A new room is locked until its owner accepts the default configuration.
    const created = next(
      alice.client,
      (s) => s.is("presence") && s.attrs.from === `${room}/amy`,
      "amy's own presence in the new room",
    );
    await alice.client.send(xml("presence", { to: `${room}/amy` }, xml("x", { xmlns: muc })));
    await created;
    await within(
      alice.client.iqCaller.request(
        xml(
          "iq",
          { type: "set", to: room },
          xml(
            "query",
            { xmlns: `${muc}#owner` },
            xml("x", { xmlns: "jabber:x:data", type: "submit" }),
          ),
        ),
      ),
      5_000,
      "the room to accept its default configuration",
    );

    const amyAsSeenByBen = next(
      bob.client,
      (s) => s.is("presence") && s.attrs.from === `${room}/amy`,
      "ben to see amy in the room",
    );
    const joined = next(
      bob.client,
      (s) => s.is("presence") && s.attrs.from === `${room}/ben`,
      "ben's own presence in the room",
    );
    await bob.client.send(xml("presence", { to: `${room}/ben` }, xml("x", { xmlns: muc })));
    const item = (await amyAsSeenByBen).getChild("x", mucUser)?.getChild("item");
    assert.equal(item?.attrs.jid, `${alice.jid}/test`);
    await joined;

    const received = next(
      bob.client,
      (s) => s.is("message") && s.getChildText("body") === "hello room",
      "ben to receive amy's room message",
    );
    await alice.client.send(
      xml("message", { to: room, type: "groupchat", id: "g1" }, xml("body", {}, "hello room")),
    );
    const message = await received;
    assert.equal(message.attrs.from, `${room}/amy`);
    assert.equal(message.getChild("stanza-id", "urn:xmpp:sid:0")?.attrs.by, room);
    assert.ok(message.getChild("occupant-id", "urn:xmpp:occupant-id:0")?.attrs.id);

    const archived = next(
      bob.client,
      (s) => s.is("message") && s.getChild("result", "urn:xmpp:mam:2") !== undefined,
      "the room's archive to return the message",
    );
    await bob.client.send(
      xml(
        "iq",
        { type: "set", to: room, id: "mam2" },
        xml("query", { xmlns: "urn:xmpp:mam:2", queryid: "q2" }),
      ),
    );
    const forwarded = (await archived)
      .getChild("result", "urn:xmpp:mam:2")
      ?.getChild("forwarded", "urn:xmpp:forward:0");
    assert.equal(forwarded?.getChild("message")?.getChildText("body"), "hello room");
  });
});
