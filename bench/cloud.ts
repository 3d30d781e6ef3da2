/**
 * Rendering 1,000 cloud agents (objects, offline validation, YAML), next to a
 * JSON round trip of the same objects in the same process. Goal: under a second.
 */
import { performance } from "node:perf_hooks";
import { renderCloud } from "../src/cloud/render.ts";
import { validateObjects } from "../src/cloud/validate.ts";
import { toYaml } from "../src/cloud/yaml.ts";
import { resolveTown } from "../src/town/resolve.ts";
import { generateTown } from "./towns.ts";

const GOAL_MS = 1000;

function median(fn: () => unknown, runs: number): number {
  for (let i = 0; i < 2; i++) fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] ?? Number.NaN;
}

/** A generated town whose every agent runs in the cloud, resolved once. */
export function cloudTown(agents: number) {
  const declaration = generateTown(agents) as {
    cloud?: unknown;
    agents: Record<string, Record<string, unknown>>;
  };
  declaration.cloud = { image: "ghcr.io/example/nuketown-agent:0.1.0" };
  for (const agent of Object.values(declaration.agents)) {
    agent.cloud = { enable: true, scaling: { maxResources: "large" } };
    // Pods cannot have these: the generated host town gives some agents devices and sudo.
    delete agent.devices;
    delete agent.sudo;
    if (Array.isArray(agent.persist))
      agent.persist = agent.persist.filter((p) => typeof p === "string");
  }
  const result = resolveTown(declaration, { hostname: "bench", baseDir: "/etc/nuketown" });
  if (!result.town) {
    throw new Error(
      `generated cloud town is invalid: ${result.errors
        .slice(0, 5)
        .map((e) => `${e.path}: ${e.message}`)
        .join("; ")}`,
    );
  }
  return result.town;
}

export async function benchCloud(agents = 1000): Promise<number> {
  const town = cloudTown(agents);
  const objects = renderCloud(town);
  const problems = validateObjects(objects);
  if (problems.length > 0) {
    console.error(`rendered objects fail validation: ${JSON.stringify(problems[0])}`);
    return 1;
  }
  const full = median(() => {
    const rendered = renderCloud(town);
    if (validateObjects(rendered).length > 0) throw new Error("invalid");
    return toYaml(rendered);
  }, 10);
  const render = median(() => renderCloud(town), 10);
  const validate = median(() => validateObjects(objects), 10);
  const yaml = median(() => toYaml(objects), 10);
  const baseline = median(() => JSON.parse(JSON.stringify(objects)), 10);
  const ms = (v: number) => `${v.toFixed(1)} ms`;
  console.log(
    `cloud: ${agents.toLocaleString("en-US")} agents → ${objects.length.toLocaleString("en-US")} objects`,
  );
  console.log(
    `  render ${ms(render)}, validate ${ms(validate)}, YAML ${ms(yaml)}; all three ${ms(full)}`,
  );
  console.log(`  JSON round trip of the same objects: ${ms(baseline)}`);
  console.log(`  render+validate+YAML / JSON round trip: ${(full / baseline).toFixed(1)}x`);
  const met = full < GOAL_MS;
  console.log(
    `goal: ${agents.toLocaleString("en-US")} cloud agents rendered in under a second: ${ms(full)} ${met ? "<" : ">="} ${GOAL_MS} ms, ${met ? "met" : "NOT met"}`,
  );
  return 0;
}

if (import.meta.main) process.exitCode = await benchCloud(Number(process.argv[2] ?? 1000));
