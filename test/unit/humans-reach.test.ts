/**
 * Who can approve, and who is told plainly that a Unix account is missing:
 * pure, from the resolved town and the names of the host's accounts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { approverReach, missingHumanAccounts } from "../../src/town/rules.ts";
import { resolveOrThrow } from "../support/fixtures.ts";

function town(extra: Record<string, unknown> = {}) {
  return resolveOrThrow({
    name: "t",
    domain: "t.local",
    humans: {
      josh: { approver: true, matrix: "@josh:t.local" },
      kim: { approver: true, unixUser: "kimberly" },
      lee: {},
    },
    agents: { ada: { uid: 1100, sudo: { enable: true } } },
    ...extra,
  });
}

describe("humans on this host", () => {
  it("names each approver's ways to answer: their account's channels, and chat through the town bot", () => {
    const noChat = approverReach(town(), (name) => name === "kimberly");
    assert.deepEqual(
      noChat.map((r) => [r.human.name, r.via]),
      [
        ["josh", []],
        ["kim", ["Unix account kimberly (nuketown approvals, the dashboard)"]],
      ],
    );
    const chatting = town({
      chat: {
        transport: "matrix",
        matrix: {
          homeserver: "http://127.0.0.1:8008",
          bot: { userId: "@bot:t.local", tokenSecret: { file: "bot.age" } },
        },
      },
    });
    assert.deepEqual(
      approverReach(chatting, (name) => name === "josh").map((r) => r.via),
      [
        [
          "Unix account josh (nuketown approvals, the desktop dialog, the dashboard)",
          "Matrix as @josh:t.local",
        ],
        [],
      ],
    );
  });

  it("says which account is missing, what its human cannot do, and both fixes", () => {
    assert.deepEqual(
      missingHumanAccounts(town(), (name) => name === "josh"),
      [
        {
          path: "humans.kim",
          message:
            'no Unix account "kimberly" on this host, so kim cannot approve from a terminal, the desktop or the dashboard here: create it (useradd --create-home kimberly) or set humans.kim.unixUser to the account kim logs in with',
        },
      ],
    );
    const [mayor] = missingHumanAccounts(town(), () => false);
    assert.match(
      mayor?.message ?? "",
      /so josh \(the mayor\) cannot approve .* nor reach the agents' sockets \(talk, portal\) here/,
    );
    assert.deepEqual(
      missingHumanAccounts(town(), () => true),
      [],
    );
  });
});
