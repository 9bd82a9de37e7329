// shopstream's storefront: one page, routed by the address's #fragment, built on the public
// REST API (/api/v1/...) as any other client would be.
import { ApiError, call, explain, forget, get, saveTokens, session } from "./api.js";
import * as cart from "./cart.js";

const main = document.getElementById("main");
const notice = document.getElementById("notice");
const alertBox = document.getElementById("alert");
const PLACEHOLDER = "/assets/placeholder.svg";
const PRODUCTS_PER_PAGE = 8;
const ORDERS_PER_PAGE = 10;
const POLL_MS = 1000;
const STATUS_WORDS = {
  pending: "Being placed",
  awaiting_payment: "Awaiting payment",
  paid: "Paid",
  rejected: "Rejected",
  cancelled: "Cancelled",
};
const PROVIDER_NAMES = { google: "Google", facebook: "Facebook", github: "GitHub" };

let stopView = () => {};
// Set when the page itself moves on, so that the message it just gave stays.
let keepMessage = false;

// --- small DOM helpers ---------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child instanceof Node ? child : String(child));
    }
  }
  return el;
}

function money(value) {
  return Number(value).toFixed(2);
}

function say(message) {
  alertBox.textContent = "";
  notice.textContent = message;
}

function fail(message) {
  notice.textContent = "";
  alertBox.textContent = message;
}

function quiet() {
  notice.textContent = "";
  alertBox.textContent = "";
}

// A table that scrolls on a narrow screen, its caption for screen readers only.
function dataTable(caption, columns, rows) {
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows),
    ),
  );
}

function show(title, ...content) {
  const heading = h("h1", { tabindex: "-1" }, title);
  main.replaceChildren(heading, ...content);
  document.title = `${title} - shopstream`;
  heading.focus();
}

function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  const parts = [h("label", { for: id }, label), input];
  if (hint) {
    const hintId = `${id}-hint`;
    input.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "hint" }, hint));
  }
  return h("div", { class: "field" }, parts);
}

function picture(product) {
  const img = h("img", {
    src: product.image_url || PLACEHOLDER,
    alt: product.image_url ? product.name : "",
    loading: "lazy",
    width: "320",
    height: "240",
  });
  img.addEventListener("error", () => {
    if (img.getAttribute("src") !== PLACEHOLDER) img.src = PLACEHOLDER;
  });
  return img;
}

function stockWords(stock) {
  return stock > 0 ? `${stock} in stock` : "Out of stock";
}

function go(hash) {
  keepMessage = true;
  if (location.hash === hash) render();
  else location.hash = hash;
}

function requireLogin(back) {
  if (session()) return true;
  sessionStorage.setItem("shopstream.after-login", back);
  say("Please log in first.");
  go("#/login");
  return false;
}

// --- the catalogue -------------------------------------------------------------------------

async function productsView(params) {
  const page = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
  const { data } = await get(`/api/v1/products?page=${page - 1}&limit=${PRODUCTS_PER_PAGE}`);
  const pages = Math.max(1, data.total_page);
  const list = h(
    "ul",
    { class: "products" },
    data.products.map((p) => h("li", { class: "card" }, productCard(p))),
  );
  const nav = h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    page > 1 ? h("a", { href: `#/?page=${page - 1}`, rel: "prev" }, "Previous page") : null,
    h("span", { "aria-current": "page" }, `Page ${page} of ${pages}`),
    page < pages ? h("a", { href: `#/?page=${page + 1}`, rel: "next" }, "Next page") : null,
  );
  show("Products", data.products.length ? list : h("p", {}, "No products here yet."), nav);
}

function productCard(p) {
  return [
    picture(p),
    h("h2", {}, h("a", { href: `#/products/${p.id}` }, p.name)),
    h("p", { class: "price" }, money(p.price)),
    h("p", { class: p.stock > 0 ? "stock" : "stock out" }, stockWords(p.stock)),
    addToCart(p),
  ];
}

function addToCart(p) {
  const quantity = h("input", {
    type: "number",
    min: "1",
    max: String(Math.max(1, p.stock)),
    value: "1",
    inputmode: "numeric",
    "aria-label": `Quantity of ${p.name}`,
  });
  const form = h(
    "form",
    {
      class: "add",
      onsubmit: (event) => {
        event.preventDefault();
        const n = Number.parseInt(quantity.value, 10);
        if (!(n >= 1)) {
          fail("Choose a quantity of at least 1.");
          return;
        }
        cart.add(p, n);
        say(`Added ${n} × ${p.name} to your cart.`);
      },
    },
    quantity,
    h("button", { type: "submit", disabled: p.stock <= 0 }, `Add ${p.name} to cart`),
  );
  return form;
}

async function productView(id) {
  const { data: p } = await get(`/api/v1/products/${encodeURIComponent(id)}`);
  show(
    p.name,
    h(
      "article",
      { class: "product" },
      picture(p),
      h(
        "div",
        {},
        h("p", { class: "price" }, money(p.price)),
        h("p", { class: p.stock > 0 ? "stock" : "stock out" }, stockWords(p.stock)),
        h("p", {}, p.description || ""),
        addToCart(p),
        h("p", {}, h("a", { href: "#/" }, "Back to the products")),
      ),
    ),
  );
}

// --- accounts ------------------------------------------------------------------------------

function afterLogin() {
  const back = sessionStorage.getItem("shopstream.after-login") || "#/";
  sessionStorage.removeItem("shopstream.after-login");
  go(back);
}

async function loginView() {
  const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
  const password = h("input", {
    type: "password",
    name: "password",
    autocomplete: "current-password",
    required: true,
  });
  const form = h(
    "form",
    {
      class: "stack",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const { data } = await call("POST", "/api/v1/auth/login", {
            body: { email: email.value, password: password.value },
          });
          saveTokens(data, email.value);
          say("You are logged in.");
          afterLogin();
        } catch (error) {
          fail(explain(error, { 401: "That email and password don't match an account." }));
        }
      },
    },
    field("Email", email),
    field("Password", password),
    h("button", { type: "submit" }, "Log in"),
  );
  const others = h("div", { class: "oauth" });
  show("Log in", form, others, h("p", {}, "New here? ", h("a", { href: "#/register" }, "Create an account")));
  await oauthButtons(others);
}

async function oauthButtons(container) {
  let providers = [];
  try {
    providers = (await get("/api/v1/auth/providers")).data.providers;
  } catch {
    return;
  }
  if (!providers.length) return;
  container.append(
    h("p", {}, "Or continue with:"),
    h(
      "ul",
      { class: "inline" },
      providers.map((p) =>
        h("li", {}, h("button", { type: "button", onclick: () => startOAuth(p) }, `Log in with ${PROVIDER_NAMES[p] || p}`)),
      ),
    ),
  );
}

async function startOAuth(provider) {
  const start = `/api/v1/auth/${encodeURIComponent(provider)}`;
  try {
    const response = await fetch(start, { headers: { Accept: "application/json" }, redirect: "manual" });
    if (response.type === "opaqueredirect") {
      location.assign(start);
      return;
    }
    const data = await response.json();
    if (!response.ok) throw new ApiError(response.status, data);
    location.assign(data.url);
  } catch (error) {
    fail(explain(error, { 503: `Logging in with ${PROVIDER_NAMES[provider] || provider} is not available right now.` }));
  }
}

async function finishOAuth() {
  const provider = location.pathname.split("/")[2];
  const query = location.search;
  history.replaceState(null, "", "/#/");
  try {
    const { data } = await call("GET", `/api/v1/oauth/${encodeURIComponent(provider)}/callback${query}`);
    saveTokens(data);
    say("You are logged in.");
  } catch (error) {
    fail(
      explain(error, {
        401: "The login was refused or has expired. Please try again.",
        403: "This login was started in another browser or tab. Please start it again here.",
        409: "An account with this email already exists, and its email is not verified yet. Log in with its password and verify the email first.",
      }),
    );
  }
}

async function verifyEmailView(query) {
  const token = query.get("token") || "";
  // The token is used up here; it need not stay in the address bar or the history.
  history.replaceState(null, "", "/#/verify-email");
  try {
    await call("POST", "/api/v1/auth/verify-email", { body: { token } });
    show(
      "Email verified",
      h("p", {}, "Your email address is verified."),
      h("p", {}, h("a", { href: "#/" }, "See the products")),
    );
  } catch (error) {
    show(
      "Sorry",
      h("p", {}, explain(error, { 404: "This link was used already or has expired. Log in to ask for a new one." })),
    );
  }
}

async function registerView() {
  const name = h("input", { name: "full_name", autocomplete: "name", required: true, minlength: "3" });
  const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
  const password = h("input", {
    type: "password",
    name: "password",
    autocomplete: "new-password",
    required: true,
    minlength: "6",
  });
  const form = h(
    "form",
    {
      class: "stack",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const body = { full_name: name.value, email: email.value, password: password.value };
          await call("POST", "/api/v1/auth/register", { body });
          const { data } = await call("POST", "/api/v1/auth/login", {
            body: { email: email.value, password: password.value },
          });
          saveTokens(data, email.value);
          say(`Welcome, ${name.value}! Your account is ready. We sent a link to ${email.value} to verify your email.`);
          afterLogin();
        } catch (error) {
          fail(explain(error, { 409: "An account with that email already exists. Try logging in." }));
        }
      },
    },
    field("Full name", name),
    field("Email", email),
    field("Password", password, "At least 6 characters."),
    h("button", { type: "submit" }, "Create account"),
  );
  const others = h("div", { class: "oauth" });
  show("Create an account", form, others);
  await oauthButtons(others);
}

// --- cart and checkout ---------------------------------------------------------------------

function cartView() {
  const lines = cart.items();
  if (!lines.length) {
    show("Your cart", h("p", {}, "Your cart is empty. ", h("a", { href: "#/" }, "Browse the products")));
    return;
  }
  const rows = lines.map((l) => {
    const quantity = h("input", {
      type: "number",
      min: "0",
      value: String(l.quantity),
      inputmode: "numeric",
      "aria-label": `Quantity of ${l.name}`,
      onchange: () => {
        cart.setQuantity(l.product_id, Math.max(0, Number.parseInt(quantity.value, 10) || 0));
        cartView();
      },
    });
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: `#/products/${l.product_id}` }, l.name)),
      h("td", {}, money(l.price)),
      h("td", {}, quantity),
      h("td", {}, money(l.price * l.quantity)),
      h(
        "td",
        {},
        h("button", { type: "button", class: "link", onclick: () => { cart.remove(l.product_id); cartView(); } }, `Remove ${l.name}`),
      ),
    );
  });
  show(
    "Your cart",
    h(
      "div",
      { class: "scroll" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, "Items in your cart"),
        h("thead", {}, h("tr", {}, ["Product", "Price", "Quantity", "Subtotal", h("span", { class: "visually-hidden" }, "Actions")].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows),
      ),
    ),
    h("p", { class: "total" }, `Estimated total: ${money(cart.total())}`),
    h("p", {}, h("a", { class: "button", href: "#/checkout" }, "Go to checkout")),
  );
}

function checkoutView() {
  const lines = cart.items();
  if (!lines.length) {
    go("#/cart");
    return;
  }
  if (!requireLogin("#/checkout")) return;
  const button = h("button", { type: "button", onclick: () => placeAndPay(button) }, "Place order and pay");
  show(
    "Checkout",
    h("ul", {}, lines.map((l) => h("li", {}, `${l.quantity} × ${l.name}`))),
    h("p", { class: "total" }, `Estimated total: ${money(cart.total())}`),
    h("p", { class: "hint" }, "The final price is the shop's current price; you pay on the payment provider's page."),
    button,
  );
}

// One key per cart content: placing the same cart again (a retry) places it once.
function checkoutKey(lines) {
  const fingerprint = JSON.stringify(lines.map((l) => [l.product_id, l.quantity]));
  const stored = JSON.parse(sessionStorage.getItem("shopstream.checkout") || "{}");
  if (stored.fingerprint === fingerprint) return stored.key;
  const key = crypto.randomUUID();
  sessionStorage.setItem("shopstream.checkout", JSON.stringify({ fingerprint, key }));
  return key;
}

async function placeAndPay(button) {
  const lines = cart.items();
  button.disabled = true;
  say("Placing your order…");
  try {
    const items = lines.map((l) => ({ product_id: l.product_id, quantity: l.quantity }));
    const { status, data } = await call("POST", "/api/v1/orders", {
      body: { items },
      headers: { "Idempotency-Key": checkoutKey(lines) },
    });
    const order = status === 202 ? await placedLater(data.location) : data.order;
    cart.clear();
    sessionStorage.removeItem("shopstream.checkout");
    await pay(order.id);
  } catch (error) {
    button.disabled = false;
    const reason = error instanceof ApiError ? error.problem.order?.reason : null;
    fail(
      explain(error, {
        409: `Sorry, we couldn't place the order${reason ? `: ${reason}` : ""}. Please change your cart and try again.`,
      }),
    );
  }
}

async function placedLater(location) {
  for (let i = 0; i < 60; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    try {
      return (await get(location)).data;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
    }
  }
  throw new ApiError(504, { detail: "the order is still being placed" });
}

async function pay(orderId) {
  say("Taking you to the payment page…");
  const { data } = await call("POST", "/api/v1/payments/sessions", {
    body: { order_id: orderId, return_path: `/#/orders/${orderId}` },
  });
  location.assign(data.redirect_url);
}

// --- orders --------------------------------------------------------------------------------

// Product names of an order's lines; a product deleted since is named by its number.
const productNames = new Map();

async function nameOf(productId) {
  if (!productNames.has(productId)) {
    try {
      productNames.set(productId, (await get(`/api/v1/products/${productId}`)).data.name);
    } catch {
      productNames.set(productId, `Product ${productId}`);
    }
  }
  return productNames.get(productId);
}

function statusWords(status) {
  return STATUS_WORDS[status] || status;
}

async function ordersView(params) {
  if (!requireLogin("#/orders")) return;
  const offset = Math.max(0, Number.parseInt(params.get("offset") || "0", 10) || 0);
  const { data } = await get(`/api/v1/orders?offset=${offset}`);
  if (!data.orders.length && offset === 0) {
    show("My orders", h("p", {}, "You have no orders yet."));
    return;
  }
  const rows = data.orders.map((o) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: `#/orders/${o.id}` }, `Order ${o.id}`)),
      h("td", {}, new Date(o.created_at).toLocaleString()),
      h("td", {}, money(o.total_price ?? 0)),
      h("td", {}, statusWords(o.status)),
    ),
  );
  show(
    "My orders",
    dataTable("Your orders, newest first", ["Order", "Placed", "Total", "Status"], rows),
    h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      offset > 0 ? h("a", { href: `#/orders?offset=${Math.max(0, offset - ORDERS_PER_PAGE)}` }, "Newer orders") : null,
      data.orders.length === ORDERS_PER_PAGE ? h("a", { href: `#/orders?offset=${offset + ORDERS_PER_PAGE}` }, "Older orders") : null,
    ),
  );
}

async function orderView(id) {
  if (!requireLogin(`#/orders/${id}`)) return;
  const status = h("p", { class: "status", id: "order-status", role: "status", "aria-live": "polite" });
  const actions = h("div", { class: "actions" });
  const details = h("div");
  let shown = null;

  const update = (order) => {
    if (order.status !== shown) {
      shown = order.status;
      status.textContent = `Status: ${statusWords(order.status)}`;
      status.dataset.status = order.status;
      actions.replaceChildren(
        order.status === "awaiting_payment"
          ? h("button", { type: "button", onclick: () => pay(order.id).catch((e) => fail(explain(e))) }, "Pay now")
          : "",
      );
    }
    details.replaceChildren(
      order.reason ? h("p", {}, `Reason: ${order.reason}`) : "",
      h(
        "ul",
        {},
        order.order_items.map((i) =>
          h("li", {}, `${i.quantity} × ${productNames.get(i.product_id) || `Product ${i.product_id}`} at ${money(i.price ?? 0)}`),
        ),
      ),
      h("p", { class: "total" }, `Total: ${money(order.total_price ?? 0)}`),
      h("h2", {}, "History"),
      h(
        "ol",
        { class: "history" },
        order.status_history.map((s) => h("li", {}, `${statusWords(s.status)} — ${new Date(s.at).toLocaleString()}`)),
      ),
    );
  };

  const { data } = await get(`/api/v1/orders/${encodeURIComponent(id)}`);
  await Promise.all(data.order_items.map((i) => nameOf(i.product_id)));
  show(`Order ${data.id}`, status, actions, details, h("p", {}, h("a", { href: "#/orders" }, "All my orders")));
  update(data);
  let timer = null;
  const poll = async () => {
    if (!["pending", "awaiting_payment"].includes(shown)) return;
    try {
      update((await get(`/api/v1/orders/${encodeURIComponent(id)}`)).data);
    } catch {
      // A missed poll is retried on the next tick.
    }
    timer = setTimeout(poll, POLL_MS);
  };
  timer = setTimeout(poll, POLL_MS);
  stopView = () => clearTimeout(timer);
}

// --- the catalogue's admin area ------------------------------------------------------------

function isAdmin() {
  return session()?.role === "admin";
}

async function adminView(params) {
  if (!requireLogin("#/admin")) return;
  if (!isAdmin()) {
    show("Admin", h("p", {}, "This area is for the shop's administrators."));
    return;
  }
  const page = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
  const { data } = await get(`/api/v1/products?page=${page - 1}&limit=20`);
  const pages = Math.max(1, data.total_page);
  const rows = data.products.map((p) => adminRow(p));
  show(
    "Admin: products",
    h("p", {}, h("a", { class: "button", href: "#/admin/products/new" }, "New product")),
    dataTable("The catalogue", ["Product", "Price", "Stock", "Actions"], rows),
    h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      page > 1 ? h("a", { href: `#/admin?page=${page - 1}` }, "Previous page") : null,
      h("span", { "aria-current": "page" }, `Page ${page} of ${pages}`),
      page < pages ? h("a", { href: `#/admin?page=${page + 1}` }, "Next page") : null,
    ),
  );
}

function adminRow(p) {
  const stock = h("input", { type: "number", min: "0", value: String(p.stock), inputmode: "numeric", "aria-label": `Stock of ${p.name}` });
  const setStock = h(
    "form",
    {
      class: "inline-form",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await call("PATCH", `/api/v1/products/${p.id}`, { body: { stock: Number.parseInt(stock.value, 10) } });
          say(`Stock of ${p.name} is now ${stock.value}.`);
        } catch (error) {
          fail(explain(error));
        }
      },
    },
    stock,
    h("button", { type: "submit" }, `Set stock of ${p.name}`),
  );
  const actions = h("td", {});
  const normal = () =>
    actions.replaceChildren(
      h("a", { href: `#/admin/products/${p.id}` }, `Edit ${p.name}`),
      " ",
      h("button", { type: "button", class: "danger", onclick: confirm }, `Delete ${p.name}`),
    );
  const confirm = () => {
    const yes = h(
      "button",
      {
        type: "button",
        class: "danger",
        onclick: async () => {
          try {
            await call("DELETE", `/api/v1/products/${p.id}`);
            say(`${p.name} was deleted.`);
            render();
          } catch (error) {
            fail(explain(error));
          }
        },
      },
      `Yes, delete ${p.name}`,
    );
    actions.replaceChildren(
      h("span", {}, `Delete ${p.name}? `),
      yes,
      " ",
      h("button", { type: "button", onclick: normal }, "Cancel"),
    );
    yes.focus();
  };
  normal();
  return h("tr", {}, h("th", { scope: "row" }, p.name), h("td", {}, money(p.price)), h("td", {}, setStock), actions);
}

async function productFormView(id) {
  if (!requireLogin("#/admin")) return;
  if (!isAdmin()) {
    show("Admin", h("p", {}, "This area is for the shop's administrators."));
    return;
  }
  const editing = id !== "new";
  const p = editing ? (await get(`/api/v1/products/${encodeURIComponent(id)}`)).data : {};
  const inputs = {
    name: h("input", { name: "name", required: true, maxlength: "100", value: p.name || "" }),
    description: h("textarea", { name: "description", rows: "3" }, p.description || ""),
    price: h("input", { name: "price", type: "number", min: "0", step: "0.01", required: true, value: p.price ?? "" }),
    stock: h("input", { name: "stock", type: "number", min: "0", step: "1", required: true, value: p.stock ?? "0" }),
    image_url: h("input", { name: "image_url", type: "url", value: p.image_url || "" }),
  };
  const form = h(
    "form",
    {
      class: "stack",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = {
          name: inputs.name.value,
          description: inputs.description.value,
          price: Number(inputs.price.value),
          stock: Number.parseInt(inputs.stock.value, 10),
          image_url: inputs.image_url.value,
        };
        try {
          const { data } = editing
            ? await call("PATCH", `/api/v1/products/${p.id}`, { body })
            : await call("POST", "/api/v1/products", { body });
          say(`${data.name} was ${editing ? "saved" : "created"}.`);
          go("#/admin");
        } catch (error) {
          fail(explain(error));
        }
      },
    },
    field("Name", inputs.name),
    field("Description", inputs.description),
    field("Price", inputs.price),
    field("Stock", inputs.stock),
    field("Picture address", inputs.image_url, "Optional: the address of a picture of the product."),
    h("button", { type: "submit" }, editing ? "Save product" : "Create product"),
  );
  show(editing ? `Edit ${p.name}` : "New product", form, h("p", {}, h("a", { href: "#/admin" }, "Back to the catalogue")));
}

// --- routing -------------------------------------------------------------------------------

const ROUTES = [
  [/^\/$/, (_, q) => productsView(q)],
  [/^\/products\/(\d+)$/, (m) => productView(m[1])],
  [/^\/login$/, () => loginView()],
  [/^\/register$/, () => registerView()],
  [/^\/verify-email$/, (_, q) => verifyEmailView(q)],
  [/^\/cart$/, () => cartView()],
  [/^\/checkout$/, () => checkoutView()],
  [/^\/orders$/, (_, q) => ordersView(q)],
  [/^\/orders\/(\d+)$/, (m) => orderView(m[1])],
  [/^\/admin$/, (_, q) => adminView(q)],
  [/^\/admin\/products\/(new|\d+)$/, (m) => productFormView(m[1])],
];

let rendered = "";

async function render() {
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/")) return;
  stopView();
  stopView = () => {};
  rendered = hash;
  const [path, query = ""] = hash.slice(1).split("?");
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  try {
    if (!route) {
      show("Not found", h("p", {}, "There is no such page. ", h("a", { href: "#/" }, "See the products")));
      return;
    }
    await route[1](path.match(route[0]), new URLSearchParams(query));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      forget();
      requireLogin(hash);
      return;
    }
    show("Sorry", h("p", {}, explain(error)));
  }
}

function refreshHeader() {
  const current = session();
  document.getElementById("cart-count").textContent = String(cart.count());
  for (const el of document.querySelectorAll("[data-when]")) {
    const when = el.dataset.when;
    el.hidden = when === "guest" ? Boolean(current) : when === "admin" ? current?.role !== "admin" : !current;
  }
}

document.getElementById("logout").addEventListener("click", async () => {
  const current = session();
  forget();
  if (current?.refresh_token) {
    call("POST", "/api/v1/auth/logout", { body: { refresh_token: current.refresh_token } }).catch(() => {});
  }
  say("You are logged out.");
  go("#/");
});

window.addEventListener("hashchange", () => {
  if (!keepMessage && location.hash !== rendered) quiet();
  keepMessage = false;
  render();
});
window.addEventListener("cart-changed", refreshHeader);
window.addEventListener("session-changed", refreshHeader);
window.addEventListener("storage", refreshHeader);

async function start() {
  refreshHeader();
  if (location.pathname.startsWith("/oauth/")) await finishOAuth();
  await render();
}

start();
