// The public API as the pages call it (decision 0025): the session cookie, its CSRF token on
// every write, problem+json answers thrown as ApiError. The same module serves the embeddable
// widget later: constructed with a token, it sends `Authorization: Bearer` instead.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `the server answered ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export class Api {
  constructor({ token = null } = {}) {
    this.token = token;
    this.csrf = null;
  }

  // Signs in with a token in the URL fragment (`#token=…`: never sent to a server, removed
  // from the address bar at once), else resumes the cookie's session. Answers the session.
  // When the browser is signed in as someone else already, the bff refuses a silent swap
  // (409 `session_switch`: a link must not sign a person into another's account);
  // `confirmSwitch(current, next)` asks the person — `current` is the session they have,
  // `next` who the link is for ({sub, role}) — and the swap happens only if it answers true.
  async signIn(confirmSwitch = async () => false) {
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    let session;
    if (token) {
      history.replaceState(null, "", location.pathname + location.search);
      const post = (headers = {}) => this.call("POST", "/session", undefined, {
        Authorization: `Bearer ${token}`, ...headers,
      });
      try {
        session = await post();
      } catch (e) {
        if (e.status !== 409 || e.problem.type !== "session_switch") throw e;
        const current = await this.call("GET", "/session");
        if (await confirmSwitch(current, claimsOf(token))) {
          session = await post({ "X-Session-Switch": "confirm" });
        } else {
          session = current;
        }
      }
    } else {
      session = await this.call("GET", "/session");
    }
    this.csrf = session.csrf_token;
    return session;
  }

  signOut() {
    return this.call("DELETE", "/session");
  }

  get(path) {
    return this.call("GET", path);
  }

  put(path, body) {
    return this.call("PUT", path, body);
  }

  post(path, body) {
    return this.call("POST", path, body);
  }

  delete(path) {
    return this.call("DELETE", path);
  }

  async call(method, path, body, headers = {}) {
    const h = { Accept: "application/json", ...headers };
    if (body !== undefined) h["Content-Type"] = "application/json";
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    else if (method !== "GET" && this.csrf) h["X-CSRF-Token"] = this.csrf;
    const resp = await fetch(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    const text = resp.status === 204 ? "" : await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { detail: text.slice(0, 200) };
    }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }
}

// The subject and role a token names (unverified: only to ask the person; the bff verifies).
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
    const claims = JSON.parse(atob(part));
    return { sub: String(claims.sub ?? "?"), role: String(claims.role ?? "?") };
  } catch {
    return { sub: "?", role: "?" };
  }
}
