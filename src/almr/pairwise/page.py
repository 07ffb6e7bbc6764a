"""The annotation page's HTML (served by `web.annotate_router`); plain JavaScript, no build step.
Every text from the study is put in with `textContent`, never as HTML: replies are model output."""

PAGE = """<!doctype html>
<html lang="zh">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Which reply is better? · 哪个回复更好？</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 1rem auto; padding: 0 1rem; color: #222; }
 .turn { margin: .3rem 0; white-space: pre-wrap; }
 .role { font-weight: 600; margin-right: .4rem; }
 .replies { display: flex; gap: 1rem; margin: 1rem 0; }
 .reply { flex: 1; border: 1px solid #ccc; border-radius: .5rem; padding: .8rem; white-space: pre-wrap; }
 .reply h3 { margin: 0 0 .5rem 0; font-size: 1rem; color: #555; }
 .choices button { font-size: 1rem; padding: .5rem 1rem; margin-right: .5rem; }
 #status { color: #555; margin: .5rem 0; }
 #login { display: none; }
</style>
</head>
<body>
<h1>Which reply is better? · 哪个回复更好？</h1>
<div id="login">
 <p>Paste the annotator token you were given. · 请输入标注令牌。</p>
 <input id="token" type="password" size="60" autocomplete="off">
 <button id="save-token">Start · 开始</button>
</div>
<div id="status"></div>
<div id="task" hidden>
 <div id="history"></div>
 <div class="turn"><span class="role">User · 用户:</span><span id="user"></span></div>
 <div class="replies">
  <div class="reply"><h3>A (left · 左)</h3><div id="left"></div></div>
  <div class="reply"><h3>B (right · 右)</h3><div id="right"></div></div>
 </div>
 <div class="choices">
  <button data-choice="left">A is better · A 更好 (1)</button>
  <button data-choice="right">B is better · B 更好 (2)</button>
  <button data-choice="tie">Tie · 一样好 (3)</button>
  <button data-choice="both_bad">Both bad · 都不好 (4)</button>
 </div>
</div>
<script>
const base = location.pathname.replace(/\\/$/, "");
let current = null;
const $ = (id) => document.getElementById(id);
function token() { return localStorage.getItem("almr-annotate-token"); }
async function call(path, body) {
  const r = await fetch(base + path, {method: body ? "POST" : "GET",
    headers: {"Authorization": "Bearer " + token(), "Content-Type": "application/json"},
    body: body ? JSON.stringify(body) : undefined});
  if (r.status === 401) {
    localStorage.removeItem("almr-annotate-token");
    showLogin("That token is not an annotator's.");
    throw new Error("401");
  }
  if (!r.ok) {
    $("status").textContent = "Error " + r.status + ": " + (await r.text());
    throw new Error(String(r.status));
  }
  return r.json();
}
function showLogin(message) {
  $("login").style.display = "block"; $("task").hidden = true; $("status").textContent = message || "";
}
function show(item, progress) {
  current = item;
  $("status").textContent = "Done by you · 已完成: " + progress.mine
    + " · study: " + progress.votes_done + "/" + progress.votes_needed;
  if (!item) {
    $("task").hidden = true;
    $("status").textContent += " — nothing left for you, thank you! · 已全部完成，谢谢！";
    return;
  }
  const history = $("history"); history.replaceChildren();
  for (const m of item.history) {
    const row = document.createElement("div"); row.className = "turn";
    const role = document.createElement("span"); role.className = "role";
    role.textContent = m.role === "user" ? "User · 用户:" : "Assistant · 助手:";
    const text = document.createElement("span"); text.textContent = m.content;
    row.append(role, text); history.append(row);
  }
  $("user").textContent = item.user; $("left").textContent = item.left; $("right").textContent = item.right;
  $("task").hidden = false; $("login").style.display = "none"; window.scrollTo(0, 0);
}
async function next() { const r = await call("/api/next"); show(r.item, r.progress); }
async function vote(choice) {
  if (!current) return;
  await call("/api/vote", {item_id: current.id, choice: choice});
  await next();
}
for (const b of document.querySelectorAll("[data-choice]")) b.addEventListener("click", () => vote(b.dataset.choice));
document.addEventListener("keydown", (e) => {
  const choice = {"1": "left", "2": "right", "3": "tie", "4": "both_bad"}[e.key];
  if (choice && document.activeElement !== $("token")) vote(choice);
});
$("save-token").addEventListener("click", () => {
  localStorage.setItem("almr-annotate-token", $("token").value.trim());
  next();
});
if (token()) next(); else showLogin();
</script>
</body>
</html>
"""
