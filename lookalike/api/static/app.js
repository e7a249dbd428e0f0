// lookalike web page: plain JS, no build step, no third-party code. Talks to the /v1 API.
"use strict";

const $ = (id) => document.getElementById(id);
const els = {
  info: $("catalog-info"),
  drop: $("dropzone"),
  dropEmpty: $("dropzone-empty"),
  file: $("file-input"),
  camera: $("camera-input"),
  urlForm: $("url-form"),
  url: $("url-input"),
  textForm: $("text-form"),
  textInput: $("text-input"),
  tags: $("query-tags"),
  category: $("category-select"),
  k: $("k-select"),
  rerank: $("rerank-check"),
  preview: $("query-preview"),
  previewImg: $("query-image"),
  previewCaption: $("query-caption"),
  error: $("error"),
  errorTitle: $("error-title"),
  errorMessage: $("error-message"),
  title: $("results-title"),
  sub: $("results-sub"),
  spinner: $("spinner"),
  panel: $("results-panel"),
  results: $("results"),
  keyForm: $("key-form"),
  keyInput: $("key-input"),
  keyState: $("key-state"),
  keyForget: $("key-forget"),
  statsLink: $("stats-link"),
  checkForm: $("check-form"),
  checkInput: $("check-input"),
  checkVerdict: $("check-verdict"),
  liked: $("liked"),
  likedCount: $("liked-count"),
  likedShow: $("liked-show"),
  likedClear: $("liked-clear"),
  likedStatus: $("liked-status"),
  likedStrip: $("liked-strip"),
};

const ERROR_TITLES = {
  bad_image: "We could not read that image",
  unsupported_format: "That image format is not supported",
  unsupported_media_type: "That is not something we can search with",
  too_large: "That image is too large",
  url_not_allowed: "That URL is not allowed",
  fetch_failed: "We could not download that image",
  not_found: "Not found",
  too_many_requests: "The server is busy",
  network: "We could not reach the server",
  timeout: "The search took too long",
  invalid_request: "Something is wrong with the request",
  missing_api_key: "This catalog needs an API key",
  invalid_api_key: "That API key is not right",
};

/** a plain sentence for the shopper before the server's own words (kept: they name the detail) */
const ERROR_HELP = {
  too_large: "Try a smaller photo (a phone photo resized, or a screenshot).",
  bad_image: "The file may be damaged, or not be a photo.",
  unsupported_format: "JPEG, PNG, WebP, GIF, BMP and TIFF photos work.",
  url_not_allowed: "Only links to images on public websites can be searched.",
  fetch_failed: "Check that the link opens the image itself, then try again.",
  timeout: "Try again, or untick \u201cCheck the best 300\u201d for a faster search.",
  too_many_requests: "Try again in a moment.",
  network: "Check your connection and try again.",
};

let lastQuery = null; // {kind: "file", file} | {kind: "url", url} | {kind: "product", id, thumb, title} | {kind: "text", text} | {kind: "liked", ids}
let textSearch = false; // the server has a text model: words search, and photos get tags
/** a query with a photo to check results against (and to tag) */
const hasPhoto = (q) => !!q && (q.kind === "file" || q.kind === "url");
let previewUrl = null; // an object URL the preview owns (revoked when the preview changes)
let gridUrls = []; // object URLs of the thumbnails in the grid (revoked on the next render)
let requestSeq = 0;

// ---------------------------------------------------------------------------- API key
// With LOOKALIKE_PROTECT_READS every read needs the X-API-Key header: the server answers 401, the
// page asks for the key and keeps it in this tab only (sessionStorage; never localStorage or a URL).
const KEY_STORAGE = "lookalike.apiKey";
const AUTH_CODES = new Set(["missing_api_key", "invalid_api_key"]);
/** how many results the verifier checks when the box is ticked (alignment screens 3x as many; the API allows 500) */
const RERANK_DEPTH = 300;
let apiKey = "";
try { apiKey = sessionStorage.getItem(KEY_STORAGE) || ""; } catch (_) { /* storage disabled */ }

function storeKey(key) {
  apiKey = key;
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
  } catch (_) { /* storage disabled: the key lasts until the page is closed */ }
}

/** fetch() with the API key, when the page has one. Every request of the page goes through here. */
function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (apiKey) headers.set("X-API-Key", apiKey);
  return fetch(path, { ...options, headers });
}

/** The key was missing or refused: show the key field (a refused key is forgotten). */
function askForKey(code) {
  const refused = code === "invalid_api_key";
  if (refused) storeKey("");
  els.keyForm.hidden = false;
  els.keyForm.classList.toggle("refused", refused);
  els.keyState.hidden = true;
  showError(code, refused
    ? "The server refused that key. Check it and enter it again at the top of the page."
    : "This catalog is private: enter its API key at the top of the page.");
  els.keyInput.focus();
}

function keyAccepted() {
  els.keyForm.hidden = true;
  els.keyForm.classList.remove("refused");
  els.keyState.hidden = !apiKey;
}

/** A thumbnail fetched with the key, as an object URL (a plain <img src> cannot send a header). */
async function loadThumb(url) {
  try {
    const r = await api(url);
    return r.ok ? URL.createObjectURL(await r.blob()) : null;
  } catch (_) {
    return null;
  }
}

function setThumb(img, url) {
  if (!apiKey) { img.src = url; markTiny(img); return; }
  const owner = gridUrls;
  loadThumb(url).then((blobUrl) => {
    if (!blobUrl) return;
    if (owner !== gridUrls) { URL.revokeObjectURL(blobUrl); return; } // the grid changed meanwhile
    owner.push(blobUrl);
    img.src = blobUrl;
    markTiny(img);
  });
}

// ---------------------------------------------------------------------------- helpers
function showError(code, message) {
  els.errorTitle.textContent = ERROR_TITLES[code] || "That did not work";
  els.errorMessage.textContent = ERROR_HELP[code] ? `${ERROR_HELP[code]} (${message})` : message;
  els.error.dataset.code = code || "error";
  els.error.hidden = false;
}

function clearError() {
  els.error.hidden = true;
  els.errorMessage.textContent = "";
}

function setBusy(busy) {
  els.spinner.hidden = !busy;
  document.body.classList.toggle("busy", busy);
  els.panel.setAttribute("aria-busy", busy ? "true" : "false"); // dims the previous results
  if (busy) els.sub.textContent = "Searching\u2026";
}

function clearResults(title, sub) {
  els.title.textContent = title;
  els.sub.textContent = sub;
  els.results.replaceChildren();
  delete els.results.dataset.query;
}

function setPreview(src, caption, ownedUrl = null) {
  if (previewUrl && previewUrl !== ownedUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = ownedUrl;
  els.previewImg.classList.remove("tiny");
  els.previewImg.src = src;
  els.previewCaption.textContent = caption;
  els.preview.hidden = false;
  els.dropEmpty.hidden = true;
}

function markTiny(img) {
  const apply = () => img.classList.toggle("tiny", img.naturalWidth > 0 && img.naturalWidth <= 64);
  if (img.complete) apply(); else img.addEventListener("load", apply, { once: true });
}
els.previewImg.addEventListener("load", () => { els.previewImg.hidden = false; markTiny(els.previewImg); });
els.previewImg.addEventListener("error", () => { els.previewImg.hidden = true; });

function filters() {
  const out = {};
  if (els.category.value) out.category = els.category.value;
  return out;
}

async function readError(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return { code: "error", message: `HTTP ${response.status} ${response.statusText}` };
}

// ---------------------------------------------------------------------------- catalog info
/** Show the catalog's size and categories; false when it could not be read. */
async function loadStats() {
  try {
    const r = await api("/v1/stats");
    if (!r.ok) throw await readError(r);
    const s = await r.json();
    els.info.textContent = `${s.products.toLocaleString()} products · model ${s.model || "none"}`;
    textSearch = !!s.text_search;
    els.textForm.hidden = !textSearch;
    const selected = els.category.value;
    els.category.replaceChildren(els.category.options[0]); // "All categories"
    for (const [name, count] of Object.entries(s.categories || {})) {
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = `${name} (${count.toLocaleString()})`;
      opt.selected = name === selected;
      els.category.append(opt);
    }
    if (selected && els.category.value !== selected) addCategory(selected, `${selected} (0)`); // from an address
    keyAccepted();
    return true;
  } catch (e) {
    if (AUTH_CODES.has(e.code)) {
      els.info.textContent = "API key needed";
      askForKey(e.code);
    } else {
      els.info.textContent = "catalog unavailable";
      showError(e.code, e.message || String(e));
    }
    return false;
  }
}

// ---------------------------------------------------------------------------- searching
// ---------------------------------------------------------------------------- likes
// The hearts a shopper ticks stay in this tab (sessionStorage); "Recommend from them" asks
// POST /v1/recommendations for products like all of them (the API takes up to 20).
const LIKED_STORAGE = "lookalike.liked";
const MAX_LIKED = 20;
const LIKED_THUMBS_STORAGE = "lookalike.likedThumbs";
let liked = [];
let likedThumbs = {}; // product id -> its thumbnail URL (from the card it was liked on)
try {
  liked = JSON.parse(sessionStorage.getItem(LIKED_STORAGE) || "[]").filter((x) => typeof x === "string");
  likedThumbs = JSON.parse(sessionStorage.getItem(LIKED_THUMBS_STORAGE) || "{}") || {};
} catch (_) { liked = []; likedThumbs = {}; }
let likedUrls = []; // object URLs of the liked strip's thumbnails (API key mode), revoked on redraw

function saveLiked(announce = null) {
  for (const id of Object.keys(likedThumbs)) if (!liked.includes(id)) delete likedThumbs[id];
  try {
    if (liked.length) {
      sessionStorage.setItem(LIKED_STORAGE, JSON.stringify(liked));
      sessionStorage.setItem(LIKED_THUMBS_STORAGE, JSON.stringify(likedThumbs));
    } else {
      sessionStorage.removeItem(LIKED_STORAGE);
      sessionStorage.removeItem(LIKED_THUMBS_STORAGE);
    }
  } catch (_) { /* storage disabled */ }
  drawLikedStrip();
  const n = liked.length;
  els.liked.hidden = n === 0;
  const heart = document.createElement("span");
  heart.setAttribute("aria-hidden", "true");
  heart.textContent = "\u2665 ";
  els.likedCount.replaceChildren(heart, `${n} liked`);
  els.likedShow.textContent = lastQuery?.kind === "liked" ? "Recommend again" : "Recommend from them";
  if (announce !== null) els.likedStatus.textContent = announce; // always present: the box may be hidden
  for (const b of els.results.querySelectorAll(".like")) {
    const on = liked.includes(b.dataset.productId);
    b.setAttribute("aria-pressed", on ? "true" : "false");
    b.textContent = on ? "\u2665" : "\u2661";
  }
}

/** The liked products as small pictures in the likes box; each one shows the products like it. */
function drawLikedStrip() {
  for (const url of likedUrls) URL.revokeObjectURL(url);
  likedUrls = [];
  const items = liked.map((id) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "liked-thumb";
    b.title = `${id}: find products like it`;
    b.setAttribute("aria-label", `Liked ${id}: find products like it`);
    const url = likedThumbs[id];
    if (url) {
      const img = document.createElement("img");
      img.alt = "";
      if (!apiKey) img.src = url;
      else loadThumb(url).then((blob) => { if (blob) { likedUrls.push(blob); img.src = blob; } });
      b.append(img);
    } else {
      b.textContent = id.slice(0, 3);
    }
    b.addEventListener("click", () => searchProduct({ product_id: id, thumbnail_url: url }));
    return b;
  });
  els.likedStrip.replaceChildren(...items);
}

/** Thumbnails for liked products that came without one (a shared link): one product read each. */
async function fillLikedThumbs() {
  const missing = liked.filter((id) => !likedThumbs[id]);
  await Promise.all(missing.map(async (id) => {
    try {
      const r = await api(`/v1/products/${encodeURIComponent(id)}`);
      if (r.ok) {
        const url = ((await r.json()).thumbnail_urls || [])[0];
        if (url) likedThumbs[id] = url;
      }
    } catch (_) { /* the strip shows the id instead */ }
  }));
  if (missing.length) saveLiked();
}

function toggleLike(id) {
  if (liked.includes(id)) {
    liked = liked.filter((x) => x !== id);
    saveLiked(`Removed from your likes. ${liked.length} liked.`);
  } else if (liked.length >= MAX_LIKED) { // the API takes 20: say so rather than drop one quietly
    saveLiked(`You can like up to ${MAX_LIKED} products: un-like one first.`);
    els.likedStatus.classList.add("shown");
  } else {
    liked.push(id);
    saveLiked(`Liked. ${liked.length} liked.`);
  }
}

function searchLiked(ids = liked, record = true) {
  if (!ids.length) return;
  const same = lastQuery?.kind === "liked" && lastQuery.ids.join("\n") === ids.join("\n");
  if (same) record = false; // the same search again: no second history entry
  lastQuery = { kind: "liked", ids: [...ids] };
  setPreview("", `${ids.length} liked product${ids.length === 1 ? "" : "s"}`);
  els.previewImg.hidden = true;
  if (record) remember(lastQuery, true);
  saveLiked();
  runSearch();
}

/** Some liked products are gone from the catalog (deleted since): drop them and search again. */
async function dropMissingLiked(ids) {
  const found = await Promise.all(ids.map(async (id) => {
    try { return (await api(`/v1/products/${encodeURIComponent(id)}`)).status !== 404; } catch (_) { return true; }
  }));
  const gone = ids.filter((_, i) => !found[i]);
  if (!gone.length) return false;
  liked = liked.filter((id) => !gone.includes(id));
  const kept = ids.filter((id) => !gone.includes(id));
  if (kept.length) {
    searchLiked(kept, false);
    remember(lastQuery, false); // the address names the products that are left
  } else {
    history.replaceState(null, "", location.pathname);
    restore(null);
  }
  const n = gone.length;
  saveLiked(`${n} liked product${n === 1 ? " is" : "s are"} no longer in the catalog and left your likes.`);
  els.likedStatus.classList.add("shown");
  return true;
}

async function runSearch() {
  if (!lastQuery) return;
  const seq = ++requestSeq;
  els.rerank.disabled = !hasPhoto(lastQuery); // a product or words have no photo to check against
  els.checkForm.hidden = !hasPhoto(lastQuery); // the authenticity check needs the photo too
  els.checkVerdict.hidden = true;
  els.likedStatus.classList.remove("shown");
  if (lastQuery.kind !== "text") els.textInput.value = ""; // the box shows the words being searched
  els.tags.hidden = true;
  const k = els.k.value;
  const rerank = els.rerank.checked ? RERANK_DEPTH : 0;
  const f = filters();
  let request;
  if (lastQuery.kind === "file") {
    const form = new FormData();
    form.append("image", lastQuery.file, lastQuery.file.name || "photo");
    form.append("k", k);
    form.append("rerank", rerank);
    if (f.category) form.append("category", f.category);
    request = api("/v1/search", { method: "POST", body: form });
  } else if (lastQuery.kind === "url") {
    request = api("/v1/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image_url: lastQuery.url, k: Number(k), rerank, filters: f }),
    });
  } else if (lastQuery.kind === "liked") {
    request = api("/v1/recommendations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ liked: lastQuery.ids, k: Number(k), filters: f }),
    });
  } else if (lastQuery.kind === "text") {
    request = api("/v1/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: lastQuery.text, k: Number(k), filters: f }),
    });
  } else {
    const params = new URLSearchParams({ k });
    if (f.category) params.set("category", f.category);
    request = api(`/v1/products/${encodeURIComponent(lastQuery.id)}/similar?${params}`);
  }
  clearError();
  setBusy(true);
  try {
    const response = await request;
    if (seq !== requestSeq) return; // a newer search started meanwhile
    if (!response.ok) {
      const err = await readError(response);
      els.checkForm.hidden = true; // no results for this photo: nothing to check it against
      if (lastQuery.kind === "liked" && err.code === "not_found" && await dropMissingLiked(lastQuery.ids)) return;
      if (AUTH_CODES.has(err.code)) askForKey(err.code);
      else if (lastQuery.kind === "text" && !textSearch && err.code === "invalid_request") {
        showError("invalid_request", "This catalog cannot be searched with words: search with a photo instead.");
      } else showError(err.code, err.message);
      clearResults("No results", "Fix the problem above and try again.");
      return;
    }
    render(await response.json());
    if (textSearch && hasPhoto(lastQuery)) loadTags(lastQuery, seq);
  } catch (e) {
    if (seq === requestSeq) {
      showError("network", `the server did not answer: ${e.message || e}`);
      clearResults("No results", "The results will show here once the server answers.");
    }
  } finally {
    if (seq === requestSeq) setBusy(false);
  }
}

function render(doc) {
  const hits = doc.results || [];
  if (lastQuery.kind === "product") {
    els.title.textContent = `Products like ${lastQuery.title || lastQuery.id}`;
  } else if (lastQuery.kind === "liked") {
    const n = lastQuery.ids.length;
    els.title.textContent = hits.length ? `Recommended from ${n} liked product${n === 1 ? "" : "s"}` : "Nothing to recommend";
  } else if (lastQuery.kind === "text") {
    els.title.textContent = hits.length ? `Products matching \u201c${lastQuery.text}\u201d` : "No matching products";
  } else {
    els.title.textContent = hits.length ? "Top matches" : "No matching products";
  }
  const cat = els.category.value ? ` in ${els.category.value}` : "";
  const checked = hits.some((h) => h.alignment !== undefined && h.alignment !== null);
  els.sub.textContent = `${hits.length} result${hits.length === 1 ? "" : "s"}${cat}`
    + (checked ? " \u00b7 ordered after checking each against your photo" : "")
    + ` \u00b7 model ${doc.model}`;
  for (const url of gridUrls) URL.revokeObjectURL(url);
  gridUrls = [];
  const hadFocus = els.results.contains(document.activeElement);
  els.results.replaceChildren(...hits.map(card));
  if (!hits.length) {
    const empty = document.createElement("li");
    empty.className = "empty";
    const strong = document.createElement("strong");
    strong.textContent = "Nothing to show";
    const what = { text: "matches these words", liked: "looks like what you liked" }[lastQuery.kind] || "looks like this";
    empty.append(strong, els.category.value
      ? `No product in ${els.category.value} ${what}. Try \u201cAll categories\u201d.`
      : "The catalog has no products to compare with yet.");
    els.results.append(empty);
  }
  if (hadFocus) els.title.focus(); // the card that had focus is gone: keep the keyboard on the page
  els.results.dataset.query = doc.query;
  if (window.matchMedia("(max-width: 860px)").matches) {
    els.title.scrollIntoView({ behavior: "smooth", block: "start" }); // on phones the grid is below the form
  }
}

function card(hit, i) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "card";
  button.dataset.productId = hit.product_id;
  button.title = `${hit.title || hit.product_id}: find products like it`;

  const figure = document.createElement("div");
  figure.className = "thumb";
  const img = document.createElement("img");
  img.alt = ""; // the card's text names the product; the image would only repeat it
  img.loading = "lazy";
  setThumb(img, hit.thumbnail_url);
  figure.append(img);

  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = `#${i + 1}`;
  figure.append(rank);

  const body = document.createElement("div");
  body.className = "card-body";
  const title = document.createElement("span");
  title.className = "card-title";
  title.textContent = hit.title || hit.product_id;
  const meta = document.createElement("span");
  meta.className = "card-meta";
  if (hit.category) {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = hit.category;
    meta.append(chip);
  }
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = `${(hit.score * 100).toFixed(1)}%`;
  score.title = "How similar the two images are overall (with checking on, the order also weighs how well "
    + "the product lines up with your photo)";
  meta.append(score);
  const bar = document.createElement("span");
  bar.className = "score-bar";
  const fill = document.createElement("span");
  fill.style.width = `${Math.max(0, Math.min(1, hit.score)) * 100}%`;
  bar.append(fill);
  if (lastQuery?.kind === "liked") { // a recommendation score orders the list; it is no similarity
    score.hidden = true;
    bar.hidden = true;
  }
  const pid = document.createElement("span");
  pid.className = "card-id";
  pid.textContent = hit.product_id;
  body.append(title, meta, bar);
  if (hit.alignment !== undefined && hit.alignment !== null) {
    const align = document.createElement("span");
    align.className = "alignment";
    align.title = "How well this product's image lines up with the photo (checked by alignment)";
    align.textContent = `aligns ${(hit.alignment * 100).toFixed(0)}%`;
    body.append(align);
  }
  body.append(pid);

  button.append(figure, body);
  button.addEventListener("click", () => searchProduct(hit));
  const like = document.createElement("button");
  like.type = "button";
  like.className = "like";
  like.dataset.productId = hit.product_id;
  const on = liked.includes(hit.product_id);
  like.setAttribute("aria-pressed", on ? "true" : "false");
  like.setAttribute("aria-label", `Like ${hit.title || hit.product_id}`);
  like.title = "Like it: recommendations come from the products you like";
  like.textContent = on ? "\u2665" : "\u2661";
  like.addEventListener("click", () => {
    if (hit.thumbnail_url) likedThumbs[hit.product_id] = hit.thumbnail_url;
    toggleLike(hit.product_id);
  });
  li.append(button, like);
  return li;
}

// ---------------------------------------------------------------------------- authenticity
/** the verdict in a shopper's words; the server's own reason follows under "why" */
const VERDICT_TEXT = {
  match: ["Yes, as far as the pictures show", "no other product in the catalog looks more like the photo. It cannot prove it is the same item."],
  lookalike: ["Probably not this one", "other products look more like the photo."],
  different: ["No", "the photo does not look like this product."],
  copy: ["That is the shop's own photo", "it shows the catalog's picture of this product, not an item in someone's hands."],
};

function showVerdict(verdict, headline, detail, reason = "") {
  els.checkVerdict.dataset.verdict = verdict;
  const strong = document.createElement("strong");
  strong.textContent = headline;
  const parts = [strong, detail ? `: ${detail}` : ""];
  if (reason) {
    const why = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "why";
    why.append(summary, reason);
    parts.push(why);
  }
  els.checkVerdict.replaceChildren(...parts);
  els.checkVerdict.hidden = false;
}

/** Does the query photo show the product in the box? The server's verdict, in plain words. */
async function checkPhoto() {
  const id = els.checkInput.value.trim();
  const query = lastQuery;
  if (!hasPhoto(query)) return;
  if (!id) {
    showVerdict("error", "Type a product id first", "the product the photo is said to show.");
    els.checkInput.focus();
    return;
  }
  const rerank = els.rerank.checked ? RERANK_DEPTH : 0;
  const path = `/v1/products/${encodeURIComponent(id)}/authenticity`;
  let request;
  if (query.kind === "file") {
    const form = new FormData();
    form.append("image", query.file, query.file.name || "photo");
    form.append("rerank", rerank);
    request = api(path, { method: "POST", body: form });
  } else {
    request = api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image_url: query.url, rerank }),
    });
  }
  const button = els.checkForm.querySelector("button[type=submit]");
  button.disabled = true;
  showVerdict("busy", "Checking\u2026", "");
  let shown;
  try {
    const response = await request;
    if (!response.ok) {
      const err = await readError(response);
      if (AUTH_CODES.has(err.code)) askForKey(err.code);
      shown = ["error", err.code === "not_found" ? "No such product" : "Could not check", err.message];
    } else {
      const doc = await response.json();
      const [headline, detail] = VERDICT_TEXT[doc.verdict] || [doc.verdict, ""];
      shown = [doc.verdict, headline, detail, doc.reason];
    }
  } catch (e) {
    shown = ["error", "Could not check", `the server did not answer: ${e.message || e}`];
  } finally {
    button.disabled = false;
  }
  if (query !== lastQuery) return; // another search started meanwhile
  showVerdict(...shown);
}

// ---------------------------------------------------------------------------- inputs
// Each new search is a step in the tab's history: Back returns to the previous one. A search by link
// or by product also lives in the address (?url=… or ?product=…, with k, category and rerank when
// they are not the defaults), so it can be bookmarked, shared and reloaded. A photo from the device
// cannot go into an address: its history entry finds the file again in this tab only.
function searchFile(file, record = true) {
  if (!file) return;
  const url = URL.createObjectURL(file);
  setPreview(url, file.name || "your photo", url);
  lastQuery = { kind: "file", file };
  els.checkInput.value = ""; // a product typed for the previous photo is not this photo's claim
  if (record) remember(lastQuery, true);
  runSearch();
}

function searchUrl(url, record = true) {
  url = url.trim();
  if (!url) {
    showError("invalid_request", "Paste the address of an image first.");
    return;
  }
  if (!/^https?:\/\//i.test(url)) {
    showError("url_not_allowed", `${url}: only http:// and https:// image URLs can be searched.`);
    return;
  }
  setPreview(url, url);
  lastQuery = { kind: "url", url };
  els.checkInput.value = "";
  if (record) remember(lastQuery, true);
  runSearch();
}

function searchText(text, record = true) {
  text = text.trim();
  if (!text) {
    showError("invalid_request", "Type a few words first, for example \u201cankle boots\u201d.");
    return;
  }
  setPreview("", `\u201c${text}\u201d`);
  els.previewImg.hidden = true;
  els.textInput.value = text;
  lastQuery = { kind: "text", text };
  if (record) remember(lastQuery, true);
  runSearch();
}

/** The catalog's tags nearest to the query photo, as buttons that search with their words. */
async function loadTags(query, seq) {
  let request;
  if (query.kind === "file") {
    const form = new FormData();
    form.append("image", query.file, query.file.name || "photo");
    form.append("k", "3");
    request = api("/v1/tags", { method: "POST", body: form });
  } else {
    request = api("/v1/tags", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image_url: query.url, k: 3 }),
    });
  }
  try {
    const r = await request;
    if (!r.ok || seq !== requestSeq) return; // tags are extra: a failure leaves the results alone
    const doc = await r.json();
    const buttons = (doc.tags || []).map((t) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "tag";
      b.textContent = t.tag;
      b.title = `${t.kind === "category" ? "category" : t.kind}: find products described as \u201c${t.tag}\u201d`;
      b.addEventListener("click", () => searchText(t.tag));
      return b;
    });
    if (!buttons.length) return;
    const label = document.createElement("span");
    label.textContent = "Looks like";
    els.tags.replaceChildren(label, ...buttons);
    els.tags.hidden = false;
  } catch (_) { /* no tags */ }
}

function searchProduct(hit, record = true) {
  const caption = `${hit.title || hit.product_id}`;
  const query = { kind: "product", id: hit.product_id, title: hit.title, thumb: hit.thumbnail_url };
  if (!hit.thumbnail_url) {
    setPreview("", caption);
    els.previewImg.hidden = true;
  } else if (apiKey) {
    setPreview("", caption);
    loadThumb(hit.thumbnail_url).then((url) => {
      if (url && lastQuery === query) setPreview(url, caption, url); else if (url) URL.revokeObjectURL(url);
    });
  } else {
    setPreview(hit.thumbnail_url, caption);
  }
  lastQuery = query;
  if (record) remember(lastQuery, true);
  if (!window.matchMedia("(max-width: 860px)").matches) window.scrollTo({ top: 0, behavior: "smooth" });
  runSearch();
}

// ---------------------------------------------------------------------------- the address bar
const DEFAULT_K = els.k.value;
const INITIAL = { title: els.title.textContent, sub: els.sub.textContent };
const historyFiles = new Map(); // history entry's file id -> File (this tab only)
let fileSeq = 0;

function pageAddress(query) {
  const params = new URLSearchParams();
  if (query?.kind === "product") params.set("product", query.id);
  else if (query?.kind === "url") params.set("url", query.url);
  else if (query?.kind === "text") params.set("q", query.text);
  else if (query?.kind === "liked") for (const id of query.ids) params.append("liked", id);
  if (els.k.value !== DEFAULT_K) params.set("k", els.k.value);
  if (els.category.value) params.set("category", els.category.value);
  if (!els.rerank.checked) params.set("rerank", "0");
  const text = params.toString();
  return location.pathname + (text ? `?${text}` : "");
}

/** Record the search in the tab's history: a new entry for a new search (``push``), else the same
 * entry with the options changed. */
function remember(query, push) {
  if (!push) {
    history.replaceState(history.state, "", pageAddress(query));
    return;
  }
  let state = null;
  if (query.kind === "file") {
    historyFiles.set(++fileSeq, query.file);
    state = { kind: "file", fileId: fileSeq };
  } else if (query.kind === "product") {
    state = { kind: "product", id: query.id, title: query.title || null, thumb: query.thumb || null };
  }
  // a text search lives in the address alone (?q=...)
  history.pushState(state, "", pageAddress(query));
}

function addCategory(value, label) {
  const opt = document.createElement("option");
  opt.value = value;
  opt.textContent = label;
  els.category.append(opt);
  els.category.value = value;
}

/** Show the search the address and history entry describe (page load, Back and Forward). */
async function restore(state) {
  const params = new URLSearchParams(location.search);
  const k = params.get("k");
  els.k.value = [...els.k.options].some((o) => o.value === k) ? k : DEFAULT_K;
  els.rerank.checked = params.get("rerank") !== "0";
  const category = params.get("category") || "";
  if (category && ![...els.category.options].some((o) => o.value === category)) addCategory(category, category);
  els.category.value = category;
  clearError();
  const product = params.get("product");
  const url = params.get("url");
  const words = (params.get("q") || "").trim().slice(0, 500); // as the box would take it
  const likedIds = params.getAll("liked").filter(Boolean).slice(0, MAX_LIKED);
  if (state?.kind === "file" && historyFiles.has(state.fileId)) {
    searchFile(historyFiles.get(state.fileId), false);
  } else if (product) {
    let hit = { product_id: product };
    if (state?.kind === "product" && state.id === product) {
      hit = { product_id: product, title: state.title, thumbnail_url: state.thumb };
    } else {
      try { // a shared or typed address: the product's title and picture for the preview
        const r = await api(`/v1/products/${encodeURIComponent(product)}`);
        if (r.ok) {
          const doc = await r.json();
          hit = { product_id: product, title: doc.title, thumbnail_url: (doc.thumbnail_urls || [])[0] };
        }
      } catch (_) { /* the search below shows what went wrong */ }
    }
    searchProduct(hit, false);
  } else if (url) {
    els.url.value = url;
    searchUrl(url, false);
  } else if (words) {
    searchText(words, false);
  } else if (likedIds.length) {
    if (!liked.length) { // a shared link: its likes become this tab's, pictures fetched
      liked = [...likedIds];
      fillLikedThumbs();
    }
    searchLiked(likedIds, false);
  } else { // the page as it opens (a photo from before a reload cannot come back)
    requestSeq++; // a search still running must not fill the grid
    setBusy(false);
    lastQuery = null;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    els.preview.hidden = true;
    els.dropEmpty.hidden = false;
    els.rerank.disabled = false;
    els.tags.hidden = true;
    els.checkForm.hidden = true;
    clearResults(INITIAL.title, INITIAL.sub);
  }
}

$("choose-button").addEventListener("click", () => els.file.click());
els.likedShow.addEventListener("click", () => searchLiked());
els.checkForm.addEventListener("submit", (e) => { e.preventDefault(); checkPhoto(); });
els.likedClear.addEventListener("click", () => {
  liked = [];
  saveLiked("Likes cleared.");
  if (lastQuery?.kind === "liked") { // recommendations from likes that are gone: back to the start
    history.pushState(null, "", location.pathname);
    restore(null);
  }
  els.title.focus();
});
$("camera-button").addEventListener("click", () => els.camera.click());
els.file.addEventListener("change", () => { searchFile(els.file.files[0]); els.file.value = ""; });
els.camera.addEventListener("change", () => { searchFile(els.camera.files[0]); els.camera.value = ""; });
els.urlForm.addEventListener("submit", (e) => { e.preventDefault(); searchUrl(els.url.value); });
els.category.addEventListener("change", () => { remember(lastQuery, false); runSearch(); });
els.k.addEventListener("change", () => { remember(lastQuery, false); runSearch(); });
els.rerank.addEventListener("change", () => {
  remember(lastQuery, false);
  if (hasPhoto(lastQuery)) runSearch();
});
els.textForm.addEventListener("submit", (e) => { e.preventDefault(); searchText(els.textInput.value); });
window.addEventListener("popstate", (e) => restore(e.state));
els.keyForm.addEventListener("submit", async (e) => {
  e.preventDefault(); // the key never goes into a URL
  const key = els.keyInput.value.trim();
  if (!key) {
    showError("missing_api_key", "Enter the API key first.");
    els.keyInput.focus();
    return;
  }
  storeKey(key);
  els.keyInput.value = "";
  clearError();
  if ((await loadStats()) && lastQuery) runSearch();
});
els.keyForget.addEventListener("click", () => { storeKey(""); loadStats(); });
// A plain link cannot send the key: with one, fetch the stats and show them in the new tab as a blob
els.statsLink.addEventListener("click", async (e) => {
  if (!apiKey) return; // open catalogs: the link works as it is
  e.preventDefault();
  const tab = window.open("", "_blank"); // now, while the click still counts (popup blockers)
  try {
    const r = await api("/v1/stats");
    if (!r.ok) throw await readError(r);
    const text = JSON.stringify(await r.json(), null, 2);
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    if (tab) tab.location.href = url; else window.location.href = url;
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (err) {
    if (tab) tab.close();
    if (AUTH_CODES.has(err.code)) askForKey(err.code); else showError(err.code, err.message || String(err));
  }
});

for (const type of ["dragenter", "dragover"]) {
  els.drop.addEventListener(type, (e) => { e.preventDefault(); els.drop.classList.add("dragging"); });
}
for (const type of ["dragleave", "drop"]) {
  els.drop.addEventListener(type, (e) => { e.preventDefault(); els.drop.classList.remove("dragging"); });
}
els.drop.addEventListener("drop", (e) => {
  const file = e.dataTransfer.files && e.dataTransfer.files[0];
  if (file) { searchFile(file); return; }
  const text = e.dataTransfer.getData("text/uri-list") || e.dataTransfer.getData("text/plain");
  if (text) { els.url.value = text; searchUrl(text); }
});
document.addEventListener("paste", (e) => {
  if (e.target instanceof Element && e.target.closest("input, textarea, select, [contenteditable]")) return;
  const item = [...(e.clipboardData?.items || [])].find((it) => it.kind === "file");
  if (item) { searchFile(item.getAsFile()); return; }
  const text = (e.clipboardData?.getData("text/plain") || "").trim(); // a copied image link
  if (/^https?:\/\/\S+$/i.test(text)) { els.url.value = text; searchUrl(text); }
});

saveLiked();
loadStats();
restore(history.state);
