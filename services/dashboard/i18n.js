// Chinese (default) and English for every label of the dashboard, rule titles and descriptions,
// and times in the loan's time zone with relative ages. The choice is kept in localStorage.
//
// Rule titles and descriptions come from the rule files, which carry both languages (`title`,
// `title_zh`, `description`, `description_zh`), through `GET /v1/rules` (setRules, on sign-in).
// A rule id the catalog does not list (an alert of a rule since removed) shows the alert's own
// title.

const LANG_KEY = "skipwatch.lang";
export const LANGS = ["zh-CN", "en"];

const STRINGS = {
  "zh-CN": {
    "app.sub": "失联预警",
    "skip": "跳到告警列表",
    "live.on": "实时", "live.off": "离线", "live.retry": "重连中…",
    "signout": "退出",
    "lang.switch": "English",
    "lang.label": "切换语言",
    "login.title": "登录",
    "login.help": "粘贴你的 skipwatch API 令牌。令牌只保存在当前浏览器标签页（sessionStorage），只发送到本服务器。",
    "login.token": "API 令牌",
    "login.submit": "登录",
    "login.empty": "请输入令牌。",
    "login.unknown": "未知令牌。",
    "login.ingest": "此密钥不能读取告警（仅限数据接入）。",
    "login.unreachable": "无法连接 API：{msg}",
    "login.rejected": "令牌未被接受，请重新登录。",
    "nav.queue": "告警队列", "nav.overview": "总览",
    "nav.places": "风险点",
    "pl.title": "风险点", "pl.help": "二押点、典当行、二手车市场、扣车场、拆车厂等。修改经 Kafka 即时下发到运行中的规则引擎，无需重启；每次修改都有记录。",
    "pl.search": "搜索名称或编号", "pl.kind": "类型", "pl.name": "名称", "pl.shape": "形状",
    "pl.source": "来源", "pl.actions": "操作", "pl.id": "编号（可留空，自动生成）", "pl.radius": "半径（米）",
    "pl.count": "共 {n} 个", "pl.map": "风险点地图",
    "pl.source.catalog": "内置", "pl.source.managed": "已管理",
    "pl.polygon.n": "多边形 · {n} 个顶点", "pl.circle.r": "圆 · 半径 {r} 米",
    "pl.new.circle": "新建圆形", "pl.new.polygon": "新建多边形", "pl.import": "导入 CSV / GeoJSON",
    "pl.readonly": "只读：只有管理员可以修改风险点。",
    "pl.edit": "编辑", "pl.delete": "删除", "pl.save": "保存", "pl.cancel": "取消",
    "pl.lat": "纬度（WGS-84）", "pl.lon": "经度（WGS-84）", "pl.vertices": "顶点（每行一个：纬度, 经度）",
    "pl.undo": "撤销顶点", "pl.clear": "清除顶点", "pl.edit.title": "编辑 {id}",
    "pl.hint.circle": "在地图上点击放置圆心。", "pl.hint.circle.moved": "已放置圆心；再次点击可移动，半径在下方修改。",
    "pl.hint.polygon": "在地图上依次点击添加顶点（已有 {n} 个，至少 3 个）。",
    "pl.err.centre": "请先在地图上点击放置圆心。", "pl.err.vertices": "多边形至少需要 3 个顶点。",
    "pl.saved": "已保存：{name}", "pl.deleted": "已删除：{name}", "pl.confirm.delete": "删除风险点「{name}」？",
    "pl.imported": "已导入：新增 {created}，更新 {updated}，未变 {unchanged}",
    "pl.import.failed": "导入失败：{msg}",
    "pl.audit": "修改记录", "pl.audit.empty": "还没有修改。",
    "pl.action.create": "新建", "pl.action.update": "修改", "pl.action.delete": "删除", "pl.action.import": "导入",
    "alerts.title": "告警",
    "f.status": "状态", "f.severity": "严重级别", "f.loan": "贷款", "f.all": "全部",
    "f.loan.placeholder": "贷款编号",
    "status.open": "触发中 + 已确认",
    "status.firing": "触发中", "status.acknowledged": "已确认", "status.silenced": "已静默",
    "status.resolved": "已解决",
    "severity.critical": "严重", "severity.warning": "警告", "severity.info": "提示",
    "col.severity": "级别", "col.alert": "告警", "col.loan": "贷款", "col.risk": "风险",
    "col.status": "状态", "col.age": "时长",
    "empty": "没有符合筛选条件的告警。",
    "more": "加载更多",
    "q.total": "显示 {n} 条，共 {total} 条",
    "panel.label": "告警详情",
    "close": "关闭",
    "fact.status": "状态", "fact.loan": "贷款", "fact.rule": "规则", "fact.risk": "风险分",
    "fact.started": "开始", "fact.updated": "更新", "fact.acked": "已确认",
    "fact.assigned": "处理人", "fact.silenced": "静默至", "fact.resolved": "解决人",
    "fact.position": "告警位置",
    "fact.silence": "通知静默", "silence.muted": "通知已静默",
    "ago": "{age}前",
    "by": "{who}，{when}",
    "assigned.by": "{assignee}（由 {by} 指派）",
    "act.ack": "确认", "act.resolve": "解决", "act.snooze": "静默", "act.assign": "指派",
    "act.snooze.for": "静默时长", "act.assign.to": "指派给", "act.assign.placeholder": "催收员",
    "act.h1": "1 小时", "act.h4": "4 小时", "act.d1": "1 天", "act.d3": "3 天",
    "done.ack": "已确认", "done.resolve": "已解决", "done.snooze": "已静默", "done.assign": "已指派",
    "readonly": "你的令牌为只读：处理告警需要操作员权限。",
    "evidence": "证据", "rule.about": "规则说明",
    "risk.score": "风险分",
    "loan": "贷款 {id}",
    "loan.open": "打开贷款视图",
    "loan.unknown": "尚未收到该贷款的登记信息。",
    "loan.borrower": "借款人", "loan.vehicle": "车辆", "loan.status": "贷款状态",
    "loan.risk": "风险分", "loan.open_alerts": "未关闭告警", "loan.last_event": "最近事件",
    "loan.timezone": "时区", "loan.back": "返回告警",
    "timeline": "时间线", "timeline.empty": "暂无记录。",
    "err.load": "无法加载告警：{msg}", "err.open": "无法打开告警：{msg}",
    "err.loan": "无法加载贷款：{msg}",
    "map": "地图",
    "map.label": "车辆位置地图",
    "map.track": "轨迹", "map.home": "常驻区域", "map.places": "风险点", "map.alert": "告警位置",
    "map.last": "最后位置", "map.resident": "常驻点", "map.resident.night": "夜间常驻点",
    "map.resident.day": "日间常驻点",
    "map.play": "播放", "map.pause": "暂停", "map.slider": "轨迹回放",
    "map.window": "近 72 小时轨迹：{n} 个定位点",
    "map.none": "该时段没有定位点。",
    "map.notiles": "地图底图不可用：仍绘制轨迹、区域和风险点。",
    "map.tracker": "{kind}定位器", "wired": "有线", "wireless": "无线",
    "fix.gps": "GPS", "fix.lbs": "基站", "fix.wifi": "Wi-Fi", "fix.none": "无定位",
    "map.last.text": "{tracker} · {fix} · {age}前",
    "map.cursor": "{when} · {speed} km/h · {fix}",
    "place.second_pledge_lot": "二押点", "place.pawn_shop": "典当行",
    "place.used_car_market": "二手车市场", "place.impound_lot": "停车场/扣押场",
    "place.scrapyard": "拆车厂/报废场",
    "kind.alert": "告警", "kind.payment": "还款", "kind.contact": "联系", "kind.ping": "定位",
    "unit.s": "秒", "unit.m": "分", "unit.h": "小时", "unit.d": "天",
    "loanstatus.active": "进行中", "loanstatus.closed": "已结清", "loanstatus.charged_off": "已核销",
    "ov.title": "总览", "ov.generated": "统计时间 {when}",
    "ov.open": "未关闭告警", "ov.ack.p50": "确认用时 P50", "ov.ack.p90": "确认用时 P90",
    "ov.ack.count": "近 {days} 天已确认", "ov.signals": "当前信号（贷款数）",
    "ov.signal.out_of_region": "离开常驻地", "ov.signal.offline": "定位器离线",
    "ov.signal.at_risk_place": "在风险点", "ov.signal.overdue": "逾期",
    "ov.signal.unreachable": "联系不上",
    "ov.signals.note": "按规则引擎为每笔贷款发布的当前状态统计（含没有未关闭告警的贷款）。",
    "loan.signals": "当前信号", "loan.signals.none": "无",
    "ov.per_day": "每日新增告警（近 {days} 天）", "ov.by_rule": "未关闭告警（按规则）",
    "ov.count": "数量", "ov.worst": "风险最高的贷款",
    "ov.failures": "死信与通知投递失败", "ov.failures.none": "暂时无法从 Kafka 读取死信和投递记录。",
    "ov.dl.24h": "死信（24 小时内）", "ov.dl.total": "死信（累计）", "ov.dl.reason": "原因",
    "ov.dl.by_reason": "死信（按原因）", "ov.dd.24h": "投递失败（24 小时内，重试用尽）",
    "ov.dd.total": "投递失败（累计，重试用尽）", "ov.df.total": "被拒收的投递（累计）", "ov.dp": "待投递",
    "q.rule": "规则", "q.assignee": "处理人", "q.label": "标签", "q.age": "开始于",
    "q.unassigned": "未指派", "q.age.1h": "1 小时内", "q.age.24h": "24 小时内", "q.age.7d": "7 天内",
    "q.sort": "排序", "q.sort.severity": "严重级别", "q.sort.risk": "风险分", "q.sort.newest": "最新",
    "q.sort.oldest": "最早", "q.keys": "j / k：上下移动 · Enter：打开 · x：选择 · Esc：关闭",
    "q.bulk": "批量操作", "q.selected": "已选 {n} 条", "q.clear": "取消选择", "q.pickcol": "选择",
    "q.pick": "选择告警 {id}", "q.bulk.done": "{action}：成功 {ok} 条，失败 {failed} 条",
  },
  en: {
    "app.sub": "失联预警",
    "skip": "Skip to alerts",
    "live.on": "Live", "live.off": "Offline", "live.retry": "Reconnecting…",
    "signout": "Sign out",
    "lang.switch": "中文",
    "lang.label": "Switch language",
    "login.title": "Sign in",
    "login.help": "Paste your skipwatch API token. It is kept in this browser tab only (sessionStorage) and sent to this server only.",
    "login.token": "API token",
    "login.submit": "Sign in",
    "login.empty": "Enter a token.",
    "login.unknown": "Unknown token.",
    "login.ingest": "This key may not read alerts (ingest-only key).",
    "login.unreachable": "Cannot reach the API: {msg}",
    "login.rejected": "Your token was not accepted. Sign in again.",
    "nav.queue": "Queue", "nav.overview": "Overview",
    "nav.places": "Risk places",
    "pl.title": "Risk places", "pl.help": "Second-pledge lots (二押点), pawn shops, used-car markets, impound lots, scrapyards. Changes go through Kafka to the running workers at once, no restart; every change is recorded.",
    "pl.search": "Search name or id", "pl.kind": "Kind", "pl.name": "Name", "pl.shape": "Shape",
    "pl.source": "Source", "pl.actions": "Actions", "pl.id": "Id (optional, generated)", "pl.radius": "Radius (m)",
    "pl.count": "{n} places", "pl.map": "Risk place map",
    "pl.source.catalog": "catalog", "pl.source.managed": "managed",
    "pl.polygon.n": "polygon · {n} vertices", "pl.circle.r": "circle · {r} m",
    "pl.new.circle": "New circle", "pl.new.polygon": "New polygon", "pl.import": "Import CSV / GeoJSON",
    "pl.readonly": "Read only: only admins change risk places.",
    "pl.edit": "Edit", "pl.delete": "Delete", "pl.save": "Save", "pl.cancel": "Cancel",
    "pl.lat": "Latitude (WGS-84)", "pl.lon": "Longitude (WGS-84)", "pl.vertices": "Vertices (one per line: lat, lon)",
    "pl.undo": "Undo vertex", "pl.clear": "Clear vertices", "pl.edit.title": "Edit {id}",
    "pl.hint.circle": "Click the map to place the centre.", "pl.hint.circle.moved": "Centre placed; click again to move it, set the radius below.",
    "pl.hint.polygon": "Click the map to add vertices ({n} so far, at least 3).",
    "pl.err.centre": "Click the map to place the centre first.", "pl.err.vertices": "A polygon needs at least 3 vertices.",
    "pl.saved": "Saved: {name}", "pl.deleted": "Deleted: {name}", "pl.confirm.delete": "Delete risk place “{name}”?",
    "pl.imported": "Imported: {created} new, {updated} updated, {unchanged} unchanged",
    "pl.import.failed": "Import failed: {msg}",
    "pl.audit": "Change log", "pl.audit.empty": "No changes yet.",
    "pl.action.create": "created", "pl.action.update": "edited", "pl.action.delete": "deleted", "pl.action.import": "imported",
    "alerts.title": "Alerts",
    "f.status": "Status", "f.severity": "Severity", "f.loan": "Loan", "f.all": "All",
    "f.loan.placeholder": "loan id",
    "status.open": "Firing + acknowledged",
    "status.firing": "firing", "status.acknowledged": "acknowledged", "status.silenced": "silenced",
    "status.resolved": "resolved",
    "severity.critical": "critical", "severity.warning": "warning", "severity.info": "info",
    "col.severity": "Severity", "col.alert": "Alert", "col.loan": "Loan", "col.risk": "Risk",
    "col.status": "Status", "col.age": "Age",
    "empty": "No alerts match these filters.",
    "more": "Load more",
    "q.total": "{n} shown of {total}",
    "panel.label": "Alert details",
    "close": "Close",
    "fact.status": "Status", "fact.loan": "Loan", "fact.rule": "Rule", "fact.risk": "Risk score",
    "fact.started": "Started", "fact.updated": "Updated", "fact.acked": "Acknowledged",
    "fact.assigned": "Assigned to", "fact.silenced": "Silenced until", "fact.resolved": "Resolved by",
    "fact.position": "Alert location",
    "fact.silence": "Notifications", "silence.muted": "muted by a silence",
    "ago": "{age} ago",
    "by": "{who}, {when}",
    "assigned.by": "{assignee} (by {by})",
    "act.ack": "Acknowledge", "act.resolve": "Resolve", "act.snooze": "Snooze", "act.assign": "Assign",
    "act.snooze.for": "Snooze for", "act.assign.to": "Assign to", "act.assign.placeholder": "collector",
    "act.h1": "1 hour", "act.h4": "4 hours", "act.d1": "1 day", "act.d3": "3 days",
    "done.ack": "Acknowledged", "done.resolve": "Resolved", "done.snooze": "Snoozed", "done.assign": "Assigned",
    "readonly": "Your token is read-only: acting on alerts needs an operator.",
    "evidence": "Evidence", "rule.about": "About this rule",
    "risk.score": "Risk score",
    "loan": "Loan {id}",
    "loan.open": "Open loan view",
    "loan.unknown": "The loan's registration has not been seen yet.",
    "loan.borrower": "Borrower", "loan.vehicle": "Vehicle", "loan.status": "Loan status",
    "loan.risk": "Risk score", "loan.open_alerts": "Open alerts", "loan.last_event": "Last event",
    "loan.timezone": "Time zone", "loan.back": "Back to alerts",
    "timeline": "Timeline", "timeline.empty": "Nothing recorded yet.",
    "err.load": "Could not load alerts: {msg}", "err.open": "Could not open the alert: {msg}",
    "err.loan": "Could not load the loan: {msg}",
    "map": "Map",
    "map.label": "Map of the vehicle's positions",
    "map.track": "Track", "map.home": "Home region", "map.places": "Risk places",
    "map.alert": "Alert location", "map.last": "Last position", "map.resident": "Resident points",
    "map.resident.night": "Night resident point", "map.resident.day": "Day resident point",
    "map.play": "Play", "map.pause": "Pause", "map.slider": "Track replay",
    "map.window": "Track of the last 72 h: {n} fixes",
    "map.none": "No fixes in this window.",
    "map.notiles": "Map tiles unavailable: track, regions and places are still drawn.",
    "map.tracker": "{kind} tracker", "wired": "Wired", "wireless": "Wireless",
    "fix.gps": "GPS", "fix.lbs": "cell (LBS)", "fix.wifi": "Wi-Fi", "fix.none": "no fix",
    "map.last.text": "{tracker} · {fix} · {age} ago",
    "map.cursor": "{when} · {speed} km/h · {fix}",
    "place.second_pledge_lot": "second-pledge lot (二押点)", "place.pawn_shop": "pawn shop",
    "place.used_car_market": "used-car market", "place.impound_lot": "impound lot",
    "place.scrapyard": "scrapyard",
    "kind.alert": "alert", "kind.payment": "payment", "kind.contact": "contact", "kind.ping": "ping",
    "unit.s": "s", "unit.m": "m", "unit.h": "h", "unit.d": "d",
    "loanstatus.active": "active", "loanstatus.closed": "closed", "loanstatus.charged_off": "charged off",
    "ov.title": "Overview", "ov.generated": "As of {when}",
    "ov.open": "Open alerts", "ov.ack.p50": "Time to ack p50", "ov.ack.p90": "Time to ack p90",
    "ov.ack.count": "Acked, last {days} days", "ov.signals": "Current signals (loans)",
    "ov.signal.out_of_region": "Out of region", "ov.signal.offline": "Trackers offline",
    "ov.signal.at_risk_place": "At a risk place", "ov.signal.overdue": "Overdue",
    "ov.signal.unreachable": "Unreachable",
    "ov.signals.note": "Counted from each loan's current status as the rule engine publishes it (loans without an open alert included).",
    "loan.signals": "Current signals", "loan.signals.none": "none",
    "ov.per_day": "Alerts started per day (last {days} days)", "ov.by_rule": "Open alerts by rule",
    "ov.count": "Count", "ov.worst": "Worst loans by risk score",
    "ov.failures": "Dead letters and delivery failures", "ov.failures.none": "Dead letters and deliveries cannot be read from Kafka right now.",
    "ov.dl.24h": "Dead letters, last 24 h", "ov.dl.total": "Dead letters, total", "ov.dl.reason": "Reason",
    "ov.dl.by_reason": "Dead letters by reason", "ov.dd.24h": "Deliveries dead, last 24 h (retries exhausted)",
    "ov.dd.total": "Deliveries dead, total (retries exhausted)", "ov.df.total": "Deliveries refused, total", "ov.dp": "Deliveries pending",
    "q.rule": "Rule", "q.assignee": "Assignee", "q.label": "Label", "q.age": "Started",
    "q.unassigned": "Unassigned", "q.age.1h": "last hour", "q.age.24h": "last 24 h", "q.age.7d": "last 7 days",
    "q.sort": "Sort", "q.sort.severity": "Severity", "q.sort.risk": "Risk score", "q.sort.newest": "Newest",
    "q.sort.oldest": "Oldest", "q.keys": "j / k: move · Enter: open · x: select · Esc: close",
    "q.bulk": "Bulk actions", "q.selected": "{n} selected", "q.clear": "Clear selection", "q.pickcol": "Select",
    "q.pick": "Select alert {id}", "q.bulk.done": "{action}: {ok} done, {failed} failed",
  },
};

// The rule catalog by id, from GET /v1/rules.
let RULES = new Map();

/** Install the rule catalog (the rows of GET /v1/rules). */
export function setRules(rows) {
  RULES = new Map(rows.map((r) => [r.id, r]));
}

let current = LANGS.includes(localStorage.getItem(LANG_KEY)) ? localStorage.getItem(LANG_KEY) : "zh-CN";

export const lang = () => current;

export function setLang(next) {
  current = LANGS.includes(next) ? next : "zh-CN";
  localStorage.setItem(LANG_KEY, current);
  document.documentElement.lang = current;
}

export function t(key, vars = {}) {
  const text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

/** The rule's title in the current language, else the alert's own title. */
export function ruleTitle(ruleId, fallback) {
  const row = RULES.get(ruleId);
  if (!row) return fallback;
  return (current === "zh-CN" && row.title_zh) || row.title;
}

/** The rule's description in the current language; "" for a rule the catalog does not list. */
export function ruleDescription(ruleId) {
  const row = RULES.get(ruleId);
  if (!row) return "";
  return (current === "zh-CN" && row.description_zh) || row.description;
}

/** Fill every [data-i18n] element's text, [data-i18n-placeholder] and [data-i18n-label]. */
export function translatePage(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
}

/** "3h 12m", "2d 4h" (or 3小时12分) since `iso`. */
export function age(iso, now = Date.now()) {
  const s = Math.max(0, (now - Date.parse(iso)) / 1000);
  const u = (k) => t(`unit.${k}`);
  const sep = current === "zh-CN" ? "" : " ";
  if (s < 60) return `${Math.floor(s)}${u("s")}`;
  if (s < 3600) return `${Math.floor(s / 60)}${u("m")}`;
  if (s < 86400) return `${Math.floor(s / 3600)}${u("h")}${sep}${Math.floor((s % 3600) / 60)}${u("m")}`;
  return `${Math.floor(s / 86400)}${u("d")}${sep}${Math.floor((s % 86400) / 3600)}${u("h")}`;
}

const formats = new Map();

/** A date and time in `timeZone` (the loan's; default Asia/Shanghai), with the zone's name. */
export function when(iso, zone = null) {
  if (!iso) return "—";
  const timeZone = zone || "Asia/Shanghai"; // a loan known only through its alerts has none
  const key = `${current}|${timeZone}`;
  if (!formats.has(key)) {
    formats.set(key, new Intl.DateTimeFormat(current, {
      timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", hour12: false, timeZoneName: "short",
    }));
  }
  return formats.get(key).format(new Date(iso));
}
