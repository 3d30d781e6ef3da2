/**
 * The part of fetch that matrix-js-sdk uses, on node:http and node:https.
 *
 * Node's own fetch (undici) parses HTTP with llhttp compiled to WebAssembly:
 * under --lite-mode, which turns WebAssembly off, every request fails with
 * "WebAssembly is not defined", and otherwise the parser's instance is
 * memory an idle chat process carries for nothing. This one needs neither.
 * It covers what the SDK sends: a method, headers, a string, Blob or byte
 * body, an abort signal; redirects are not followed.
 */
import http from "node:http";
import https from "node:https";

export interface HttpFetch {
  (input: string | URL, init?: RequestInit): Promise<Response>;
  /** Closes the kept-alive connections. */
  close(): void;
}

export function httpFetch(): HttpFetch {
  const agents = {
    "http:": new http.Agent({ keepAlive: true }),
    "https:": new https.Agent({ keepAlive: true }),
  };
  const fetch = async (input: string | URL, init: RequestInit = {}): Promise<Response> => {
    if (typeof input !== "string" && !(input instanceof URL))
      throw new TypeError("httpFetch: only a URL or a string");
    const url = new URL(input);
    if (url.protocol !== "http:" && url.protocol !== "https:")
      throw new TypeError(`httpFetch: ${url.protocol} is not http or https`);
    const signal = init.signal ?? undefined;
    if (signal?.aborted) throw aborted();
    const method = (init.method ?? "GET").toUpperCase();
    const headers = new Headers(init.headers);
    const body = await bytes(init.body, headers);
    if (body !== undefined) headers.set("content-length", String(body.length));
    return await new Promise<Response>((resolve, reject) => {
      const request = (url.protocol === "https:" ? https : http).request(url, {
        method,
        headers: Object.fromEntries(headers),
        agent: agents[url.protocol as "http:" | "https:"],
      });
      const onAbort = () => {
        request.destroy();
        reject(aborted());
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const settle = () => signal?.removeEventListener("abort", onAbort);
      request.on("error", (error) => {
        settle();
        reject(new TypeError(error.message, { cause: error }));
      });
      request.on("response", (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", (error) => {
          settle();
          reject(new TypeError(error.message, { cause: error }));
        });
        response.on("end", () => {
          settle();
          const status = response.statusCode ?? 502;
          const empty = status === 204 || status === 304 || method === "HEAD";
          const answer = new Headers();
          const raw = response.rawHeaders;
          for (let i = 0; i + 1 < raw.length; i += 2) answer.append(raw[i]!, raw[i + 1]!);
          try {
            resolve(
              new Response(empty ? null : Buffer.concat(chunks), {
                status,
                statusText: response.statusMessage ?? "",
                headers: answer,
              }),
            );
          } catch (error) {
            reject(error);
          }
        });
      });
      request.end(body);
    });
  };
  return Object.assign(fetch, {
    close() {
      agents["http:"].destroy();
      agents["https:"].destroy();
    },
  });
}

/** The body as bytes; sets the content type fetch would give a string or a typed Blob. */
async function bytes(body: RequestInit["body"], headers: Headers): Promise<Buffer | undefined> {
  if (body === null || body === undefined) return undefined;
  const type = (value: string) => {
    if (!headers.has("content-type")) headers.set("content-type", value);
  };
  if (typeof body === "string") {
    type("text/plain;charset=UTF-8");
    return Buffer.from(body);
  }
  if (body instanceof Blob) {
    if (body.type) type(body.type);
    return Buffer.from(await body.arrayBuffer());
  }
  if (body instanceof URLSearchParams) {
    type("application/x-www-form-urlencoded;charset=UTF-8");
    return Buffer.from(body.toString());
  }
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError("httpFetch: a body of this kind is not supported");
}

function aborted(): DOMException {
  return new DOMException("This operation was aborted", "AbortError");
}
