// The public REST API, as any client calls it, and problem+json answers in a shopper's words.
const SESSION = "shopstream.session";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.error || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function session() {
  try {
    return JSON.parse(localStorage.getItem(SESSION) || "null");
  } catch {
    return null;
  }
}

export function saveTokens(tokens, email) {
  const previous = session() || {};
  localStorage.setItem(
    SESSION,
    JSON.stringify({
      token: tokens.token,
      refresh_token: tokens.refresh_token,
      role: tokens.role,
      email: email ?? previous.email ?? "",
    }),
  );
  window.dispatchEvent(new Event("session-changed"));
}

export function forget() {
  localStorage.removeItem(SESSION);
  window.dispatchEvent(new Event("session-changed"));
}

async function send(method, path, { body, headers = {}, token } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (token) init.headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { detail: "network error" });
  }
  const text = await response.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { detail: text };
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    error.retryAfter = response.headers.get("Retry-After");
    throw error;
  }
  return { status: response.status, data, headers: response.headers };
}

async function refreshed(current) {
  try {
    const { data } = await send("POST", "/api/v1/auth/refresh", {
      body: { refresh_token: current.refresh_token },
    });
    saveTokens(data);
    return data.token;
  } catch {
    forget();
    return null;
  }
}

// A call as the logged-in shopper: an expired access token is refreshed once, then retried.
export async function call(method, path, options = {}) {
  const current = session();
  try {
    return await send(method, path, { ...options, token: current?.token });
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401 || !current?.refresh_token) throw error;
    const token = await refreshed(current);
    if (!token) throw error;
    return send(method, path, { ...options, token });
  }
}

export const get = (path) => call("GET", path);

const FIELDS = {
  name: "name",
  description: "description",
  price: "price",
  stock: "stock",
  image_url: "picture address",
  email: "email",
  password: "password",
  full_name: "full name",
  items: "cart",
};

function fieldWords(problem) {
  const fields = (problem.errors || [])
    .map((e) => FIELDS[String(e.path).split(".").find((part) => FIELDS[part])] || null)
    .filter(Boolean);
  return [...new Set(fields)];
}

// What to tell the shopper; `overrides` has this call's own words per HTTP status.
export function explain(error, overrides = {}) {
  if (!(error instanceof ApiError)) return "Something went wrong. Please try again.";
  if (overrides[error.status]) return overrides[error.status];
  switch (error.status) {
    case 0:
      return "We couldn't reach the shop. Check your connection and try again.";
    case 400:
      return "The shop couldn't read that request. Please try again.";
    case 401:
      return "Please log in to continue.";
    case 403:
      return "Your account isn't allowed to do that.";
    case 404:
      return "We couldn't find that. It may have been removed.";
    case 409:
      return "That can't be done any more: things changed in the meantime. Please check and try again.";
    case 413:
      return "That is too large to send.";
    case 422: {
      const fields = fieldWords(error.problem);
      return fields.length
        ? `Please check the ${fields.join(", ")} and try again.`
        : "Some of that isn't valid. Please check and try again.";
    }
    case 429:
      return `Too many tries in a short time. Please wait ${error.retryAfter || "a few"} seconds and try again.`;
    default:
      return "The shop is busy right now. Please try again in a moment.";
  }
}
