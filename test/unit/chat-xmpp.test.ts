/**
 * The pure parts of the XMPP transport: reading stanzas (addresses, delay,
 * stanza ids, reply fallbacks, reactions, mentions), the restart-safety state
 * and SCRAM-SHA-1. The transport itself is tested against Prosody
 * (test/integration/chat-xmpp.test.ts).
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { xml } from "@xmpp/client";
import { ScramSha1 } from "../../src/chat/xmpp/scram.ts";
import {
  archivedMessage,
  dateTime,
  errorOf,
  mentionsAny,
  NS,
  originId,
  parseJid,
  reactionsOf,
  stanzaIdBy,
  stripQuote,
  trustedDelay,
  withoutReplyFallback,
  withoutStreamManagement,
} from "../../src/chat/xmpp/stanza.ts";
import {
  CLOCK_MARGIN_MS,
  DeliveryState,
  FIRST_JOIN_HISTORY,
  XMPP_STATE_FILE,
} from "../../src/chat/xmpp/state.ts";
import { isLoopbackService } from "../../src/chat/xmpp/transport.ts";

describe("XMPP stanzas", () => {
  it("parses addresses, lowercasing localpart and domain but not the resource", () => {
    assert.deepEqual(parseJid("Ada@Example.ORG/Laptop"), {
      local: "ada",
      domain: "example.org",
      resource: "Laptop",
      bare: "ada@example.org",
    });
    assert.equal(
      parseJid("room@conference.example.org/nick/with/slashes")?.resource,
      "nick/with/slashes",
    );
    assert.equal(parseJid("example.org")?.bare, "example.org");
    for (const bad of ["", "@example.org", "ada@", "ada@example.org/", "a b@ex ample"])
      assert.equal(parseJid(bad), undefined, bad);
  });

  it("trusts a delay stamp only from the given entity", () => {
    const stanza = xml(
      "message",
      {},
      xml("delay", { xmlns: NS.delay, from: "mallory@example.org", stamp: "2020-01-01T00:00:00Z" }),
      xml("delay", {
        xmlns: NS.delay,
        from: "Room@conference.example.org",
        stamp: "2024-05-06T07:08:09.5Z",
      }),
    );
    assert.equal(
      trustedDelay(stanza, "room@conference.example.org"),
      Date.UTC(2024, 4, 6, 7, 8, 9, 500),
    );
    assert.equal(trustedDelay(stanza, "example.org"), undefined);
  });

  it("reads stanza ids by their assigner and origin ids", () => {
    const stanza = xml(
      "message",
      { id: "attr" },
      xml("stanza-id", { xmlns: NS.stanzaId, by: "mallory@example.org", id: "forged" }),
      xml("stanza-id", { xmlns: NS.stanzaId, by: "room@conference.example.org", id: "real" }),
      xml("origin-id", { xmlns: NS.stanzaId, id: "origin" }),
    );
    assert.equal(stanzaIdBy(stanza, "room@conference.example.org"), "real");
    assert.equal(stanzaIdBy(stanza, "other@example.org"), undefined);
    assert.equal(originId(stanza), "origin");
    assert.equal(originId(xml("message", { id: "attr" })), "attr");
  });

  it("removes the reply fallback by code point ranges", () => {
    const quote = "> 👍 ünïcode\n";
    const body = `${quote}the answer`;
    const stanza = xml(
      "message",
      {},
      xml("reply", { xmlns: NS.reply, id: "x" }),
      xml(
        "fallback",
        { xmlns: NS.fallback, for: NS.reply },
        xml("body", { start: "0", end: String(Array.from(quote).length) }),
      ),
    );
    assert.equal(withoutReplyFallback(stanza, body), "the answer");
  });

  it("strips quote lines when the fallback gives no usable range, and leaves other fallbacks alone", () => {
    const noRange = xml("message", {}, xml("fallback", { xmlns: NS.fallback, for: NS.reply }));
    assert.equal(withoutReplyFallback(noRange, "> a\n> b\n\nreply"), "reply");
    const outOfRange = xml(
      "message",
      {},
      xml(
        "fallback",
        { xmlns: NS.fallback, for: NS.reply },
        xml("body", { start: "0", end: "999" }),
      ),
    );
    assert.equal(withoutReplyFallback(outOfRange, "> a\nreply"), "reply");
    const other = xml("message", {}, xml("fallback", { xmlns: NS.fallback, for: "urn:other" }));
    assert.equal(withoutReplyFallback(other, "> kept\nbody"), "> kept\nbody");
    assert.equal(stripQuote("no quote"), "no quote");
  });

  it("reads a reaction set without empty or repeated keys", () => {
    const stanza = xml(
      "message",
      {},
      xml(
        "reactions",
        { xmlns: NS.reactions, id: "target" },
        xml("reaction", {}, "👍🏽"),
        xml("reaction", {}, " "),
        xml("reaction", {}, "👍🏽"),
        xml("reaction", {}, "❤️"),
      ),
    );
    assert.deepEqual(reactionsOf(stanza), { target: "target", keys: ["👍🏽", "❤️"] });
    assert.equal(
      reactionsOf(xml("message", {}, xml("reactions", { xmlns: NS.reactions }))),
      undefined,
    );
  });

  it("finds mentions as whole words, ignoring case", () => {
    assert.ok(mentionsAny("hey Ada, look", ["ada"]));
    assert.ok(mentionsAny("ask agent@example.org", ["agent@example.org"]));
    assert.ok(!mentionsAny("adamant", ["ada"]));
    assert.ok(!mentionsAny("anything", ["", " "]));
  });

  it("formats history times in whole seconds and names stanza errors", () => {
    assert.equal(dateTime(Date.UTC(2024, 0, 2, 3, 4, 5, 678)), "2024-01-02T03:04:05Z");
    const error = xml(
      "message",
      { type: "error" },
      xml(
        "error",
        { type: "cancel" },
        xml("not-acceptable", { xmlns: NS.stanzas }),
        xml("text", { xmlns: NS.stanzas }, "You are not in the room"),
      ),
    );
    assert.equal(errorOf(error), "not-acceptable: You are not in the room");
  });

  it("reads an archive query's result: archive id, archived time and the message", () => {
    const result = (queryid: string, delay = true) =>
      xml(
        "message",
        { to: "agent@example.org/x" },
        xml(
          "result",
          { xmlns: NS.mam, queryid, id: "arch-1" },
          xml(
            "forwarded",
            { xmlns: NS.forward },
            delay ? xml("delay", { xmlns: NS.delay, stamp: "2024-05-06T07:08:09Z" }) : undefined,
            xml(
              "message",
              { from: "human@example.org/laptop", type: "chat" },
              xml("body", {}, "hi"),
            ),
          ),
        ),
      );
    const item = archivedMessage(result("q1"), "q1");
    assert.equal(item?.id, "arch-1");
    assert.equal(item?.stamp, Date.UTC(2024, 4, 6, 7, 8, 9));
    assert.equal(item?.message.getChildText("body"), "hi");
    assert.equal(archivedMessage(result("q2"), "q1"), undefined, "another query's");
    assert.equal(archivedMessage(result("q1", false), "q1"), undefined, "no archived time");
    assert.equal(archivedMessage(xml("message", {}, xml("body", {}, "x")), "q1"), undefined);
  });

  it("removes stream management from the stream features, inline ones included", () => {
    const features = xml(
      "features",
      { xmlns: NS.streams },
      xml("bind", { xmlns: "urn:ietf:params:xml:ns:xmpp-bind" }),
      xml("sm", { xmlns: NS.sm }),
      xml(
        "authentication",
        { xmlns: NS.sasl2 },
        xml("mechanism", {}, "SCRAM-SHA-1"),
        xml(
          "inline",
          {},
          xml("sm", { xmlns: NS.sm }),
          xml(
            "bind",
            { xmlns: NS.bind2 },
            xml(
              "inline",
              {},
              xml("feature", { var: NS.sm }),
              xml("feature", { var: "urn:xmpp:carbons:2" }),
            ),
          ),
        ),
      ),
    );
    withoutStreamManagement(features);
    const text = features.toString();
    assert.ok(!text.includes(NS.sm), text);
    assert.ok(features.getChild("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
    assert.ok(text.includes("urn:xmpp:carbons:2"));
    assert.ok(text.includes("SCRAM-SHA-1"));
  });
});

describe("XMPP delivery state", () => {
  const dirs: string[] = [];
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });
  async function dir() {
    const made = await mkdtemp(path.join(os.tmpdir(), "nt-test-xmpp-"));
    dirs.push(made);
    return made;
  }
  const log = () => {};
  const room = "room@conference.example.org";
  const peer = "human@example.org";

  it("on the first start delivers live messages but no stored ones", async () => {
    const state = DeliveryState.load(await dir(), "agent@example.org", log, 1_000_000);
    assert.ok(state.fresh);
    assert.ok(state.admits(room, "live", undefined, true));
    assert.ok(!state.admits(room, "history", 900_000, true));
    assert.ok(!state.admits(peer, "offline", 1_100_000, false));
  });

  it("remembers a first join's history, and later drops what is older than the watermark or handled", async () => {
    const stateDir = await dir();
    const state = DeliveryState.load(stateDir, "agent@example.org", log, 0);
    assert.ok(!state.admits(room, "before-join", 50_000, true));
    state.joined(room, 100_000);
    assert.equal(state.watermark(room), 100_000);
    state.delivered(room, "m1", 200_000);
    state.delivered(peer, "d1", 210_000);
    const file = path.join(stateDir, XMPP_STATE_FILE);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal(JSON.parse(await readFile(file, "utf8")).jid, "agent@example.org");

    const again = DeliveryState.load(stateDir, "agent@example.org", log);
    assert.ok(!again.fresh);
    assert.ok(!again.admits(room, "before-join", 200_000, true), "history of the first join");
    assert.ok(!again.admits(room, "m1", 200_000, true), "delivered");
    assert.ok(
      !again.admits(room, "old", 200_000 - CLOCK_MARGIN_MS - 1000, true),
      "before the margin",
    );
    assert.ok(again.admits(room, "new", 250_000, true));
    assert.ok(again.admits(room, "close", 200_000 - 1000, true), "within the margin, not handled");
    assert.ok(again.admits(peer, "d2", 250_000, false));
    assert.ok(
      again.admits("new@example.org", "n1", 10, false),
      "a new peer: since the file exists",
    );
    assert.ok(!again.admits("new@example.org", "n0", -10, false));
    assert.ok(FIRST_JOIN_HISTORY > 0);
  });

  it("keeps the archive mark; after it, all that is not handled is new, whatever its time", async () => {
    const stateDir = await dir();
    const state = DeliveryState.load(stateDir, "agent@example.org", log, 1_000_000);
    assert.equal(state.archiveMark(), undefined);
    state.markArchive(null);
    state.save();
    assert.equal(DeliveryState.load(stateDir, "agent@example.org", log).archiveMark(), null);
    state.markArchive("arch-7");
    state.delivered(peer, "arch-8", 2_000_000);
    const again = DeliveryState.load(stateDir, "agent@example.org", log);
    assert.equal(again.archiveMark(), "arch-7");
    assert.ok(!again.admits(peer, "arch-8", 2_000_000, false, true), "handled");
    assert.ok(again.admits(peer, "arch-9", 1_000, false, true), "after the mark");
    assert.ok(!again.admits(peer, "arch-9", 1_000, false), "a stored message that old");
    assert.ok(again.admits("new@example.org", "arch-10", 1_000, false, true));
  });

  it("starts without a state file of another account, or an unreadable one", async () => {
    const stateDir = await dir();
    DeliveryState.load(stateDir, "agent@example.org", log).save();
    const lines: string[] = [];
    assert.ok(DeliveryState.load(stateDir, "other@example.org", (l) => lines.push(l)).fresh);
    assert.match(lines[0] ?? "", /belongs to agent@example\.org/);
    await writeFile(path.join(stateDir, XMPP_STATE_FILE), "{not json");
    assert.ok(DeliveryState.load(stateDir, "agent@example.org", (l) => lines.push(l)).fresh);
    assert.match(lines[1] ?? "", /unreadable/);
  });

  it("remembers invited rooms with their password", async () => {
    const stateDir = await dir();
    const state = DeliveryState.load(stateDir, "agent@example.org", log);
    state.addInvited(room, "secret");
    state.addInvited("open@conference.example.org", undefined);
    state.removeInvited("open@conference.example.org");
    assert.deepEqual(DeliveryState.load(stateDir, "agent@example.org", log).invitedRooms(), [
      [room, "secret"],
    ]);
  });
});

describe("SCRAM-SHA-1", () => {
  it("answers the RFC 5802 example exchange", () => {
    const mech = new ScramSha1(() => "fyko+d2lbbFgONRv9qkxdawL");
    const credentials = { username: "user", password: "pencil" };
    assert.equal(mech.response(credentials), "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL");
    mech.challenge("r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
    assert.equal(
      mech.response(credentials),
      "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    );
  });

  it("refuses a server nonce that does not extend the client's", () => {
    const mech = new ScramSha1(() => "abc");
    mech.response({ username: "user", password: "pencil" });
    mech.challenge("r=xyz,s=QSXCR+Q6sek8bf92,i=4096");
    assert.throws(() => mech.response({ username: "user", password: "pencil" }), /nonce/);
  });
});

describe("what a hostile server or sender cannot do", () => {
  it("cannot freeze the process with a huge SCRAM iteration count", () => {
    const mech = new ScramSha1(() => "abc");
    mech.response({ username: "user", password: "pencil" });
    mech.challenge("r=abcdef,s=QSXCR+Q6sek8bf92,i=2000000000");
    assert.throws(() => mech.response({ username: "user", password: "pencil" }), /iterations/);
  });

  it("cannot stamp a message in the future", () => {
    const stanza = xml(
      "message",
      {},
      xml("delay", {
        xmlns: "urn:xmpp:delay",
        from: "room@conference.example.org",
        stamp: "2100-01-01T00:00:00Z",
      }),
    );
    const stamped = trustedDelay(stanza, "room@conference.example.org") ?? 0;
    assert.ok(stamped <= Date.now(), String(stamped));
  });

  it("sends credentials in the clear only to this machine", () => {
    for (const local of [
      "xmpp://127.0.0.1:5222",
      "xmpp://localhost",
      "ws://[::1]:5280/xmpp-websocket",
    ])
      assert.ok(isLoopbackService(local), local);
    for (const remote of ["xmpp://chat.example.org", "xmpp://10.0.0.2:5222", "nonsense"])
      assert.ok(!isLoopbackService(remote), remote);
  });
});
