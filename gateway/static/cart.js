// The cart lives in this browser only (localStorage); prices in it are what the shopper saw,
// the server charges the catalogue's.
const KEY = "shopstream.cart";

export function items() {
  try {
    const stored = JSON.parse(localStorage.getItem(KEY) || "[]");
    return Array.isArray(stored) ? stored : [];
  } catch {
    return [];
  }
}

function save(list) {
  localStorage.setItem(KEY, JSON.stringify(list));
  window.dispatchEvent(new Event("cart-changed"));
}

export function add(product, quantity) {
  const list = items();
  const line = list.find((l) => l.product_id === product.id);
  if (line) {
    line.quantity += quantity;
  } else {
    list.push({ product_id: product.id, name: product.name, price: product.price, quantity });
  }
  save(list);
}

export function setQuantity(productId, quantity) {
  save(items().map((l) => (l.product_id === productId ? { ...l, quantity } : l)).filter((l) => l.quantity > 0));
}

export function remove(productId) {
  save(items().filter((l) => l.product_id !== productId));
}

export function clear() {
  save([]);
}

export function count() {
  return items().reduce((n, l) => n + l.quantity, 0);
}

export function total() {
  return items().reduce((sum, l) => sum + l.price * l.quantity, 0);
}
