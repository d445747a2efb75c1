// The bluegreen operator console: plain DOM, no dependencies, served by the admin listener (src/admin/console.ts)
// as ES modules under hashed names. Every change is confirmed in a dialog and sent with the generation the
// operator saw: if the state moved meanwhile, the API answers 409 and the page shows the new state instead of
// overwriting it. The token and the API calls are in api.js, the mirror's panel in mirror.js.

import { ApiError, api, currentToken, showAlert, showError, useToken } from './api.js'
import { ago, byId, COLORS, colorName, h, percent, svg, time } from './dom.js'
import { loadMirror, wireMirror } from './mirror.js'

const POLL_MS = 5000

/** The last GET /state answer. */
let state = null
/** The last GET /windows answer. */
let windows = null
/** What the open confirmation dialog will do. */
let pending = null
/** The operator is moving the weights slider: leave it alone. */
let editingWeights = false

// --- loading ---

async function loadState() {
  try {
    state = await api('GET', '/state')
    renderState()
  } catch (error) {
    showError(error, 'Reading the state')
  }
}

async function loadReplicas() {
  try {
    renderReplicas(await api('GET', '/replicas'))
  } catch (error) {
    byId('missing').textContent = `Replicas unavailable: ${error.message}`
  }
}

async function loadWindows() {
  try {
    windows = await api('GET', '/windows')
    renderColors()
  } catch (error) {
    byId('window-note').textContent = `(figures unavailable: ${error.message})`
  }
}

async function loadAudit() {
  try {
    renderAudit((await api('GET', '/events?limit=12')).events ?? [])
  } catch {
    // The audit trail is informative; the state and the alerts are what matter.
  }
}

function loadAll() {
  return Promise.all([loadState(), loadReplicas(), loadWindows(), loadAudit(), loadMirror()])
}

// --- live events: fetch() streaming, parsed here, so a bearer header could be sent (EventSource cannot) ---

function setConnection(live, text) {
  const element = byId('connection')
  element.textContent = text
  element.classList.toggle('live', live)
  element.classList.toggle('down', !live)
}

async function follow() {
  let lastEventId
  let delay = 1000
  for (;;) {
    try {
      const headers = { accept: 'text/event-stream' }
      const token = currentToken()
      if (token) headers.authorization = `Bearer ${token}`
      if (lastEventId) headers['last-event-id'] = lastEventId
      const response = await fetch('/events/stream', { headers, cache: 'no-store', credentials: 'omit' })
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`)
      setConnection(true, 'live')
      delay = 1000
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
      let buffer = ''
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        buffer += value.replace(/\r\n?/g, '\n')
        let end = buffer.indexOf('\n\n')
        while (end !== -1) {
          const id = onFrame(buffer.slice(0, end))
          if (id) lastEventId = id
          buffer = buffer.slice(end + 2)
          end = buffer.indexOf('\n\n')
        }
      }
    } catch {
      // Reconnected below; the polling keeps the page current meanwhile.
    }
    setConnection(false, `reconnecting (live events lost; polling every ${POLL_MS / 1000} s)`)
    await new Promise((resolve) => setTimeout(resolve, delay))
    delay = Math.min(delay * 2, 15_000)
  }
}

/** What each kind of live event changes on the page; a kind not listed here (a newer proxy's) is ignored. */
const RELOADS = {
  // A switch, weights, a rollback, a rollout step, a mirror change: the state and everything drawn from it.
  state: () => [loadState, loadReplicas, loadMirror],
  drain: () => [loadState, loadReplicas],
  // The standby's fleet view is part of GET /state.
  standby: () => [loadState],
  replica: () => [loadReplicas],
  audit: () => [loadAudit],
  // A reload can change the thresholds, the pools and the mirror's settings.
  reload: () => [loadAll, loadAudit],
  resync: () => [loadAll],
}

/** One Server-Sent Events frame; returns its id, if any. */
function onFrame(frame) {
  let id
  let kind = 'message'
  const data = []
  for (const line of frame.split('\n')) {
    if (line.startsWith('id:')) id = line.slice(3).trim()
    else if (line.startsWith('event:')) kind = line.slice(6).trim()
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''))
  }
  if (kind === 'smoke') showSmokeEvent(data.join('\n'))
  else if (Object.hasOwn(RELOADS, kind)) refreshSoon(...RELOADS[kind]())
  return id
}

/** A run of the smoke checks anywhere on this replica (by hand, or gating a change) shows in the smoke panel. */
function showSmokeEvent(text) {
  try {
    const run = JSON.parse(text)
    if (run && typeof run === 'object' && typeof run.color === 'string') renderSmoke(run)
  } catch {
    // A frame that is not JSON says nothing the page can show.
  }
}

const queued = new Set()
let refreshTimer
/** Many events at once (a rollout step, a burst of refusals) cost one reload each, not one per event. */
function refreshSoon(...loads) {
  for (const load of loads) queued.add(load)
  clearTimeout(refreshTimer)
  refreshTimer = setTimeout(() => {
    const runs = [...queued]
    queued.clear()
    for (const run of runs) run()
  }, 100)
}

// --- rendering ---

function renderState() {
  if (!state) return
  const { active, weights, generation, updatedAt, updatedBy, reason, trigger } = state
  const activeElement = byId('active')
  activeElement.textContent = active
  activeElement.className = `swatch-text is-${active}`
  const bar = byId('weights-bar')
  bar.setAttribute('aria-label', `weights: blue ${weights.blue}%, green ${weights.green}%`)
  bar.replaceChildren(
    ...COLORS.filter((color) => weights[color] > 0).map((color) => {
      const part = h('span', { class: color, text: `${color} ${weights[color]}%` })
      part.style.flexGrow = String(weights[color])
      return part
    }),
  )
  byId('generation').textContent = String(generation)
  byId('updated-by').textContent = `${updatedBy ?? '–'} (${trigger ?? 'admin'})`
  byId('updated-at').textContent = `${time(updatedAt)} (${ago(updatedAt)})`
  byId('reason').textContent = reason || '–'
  const watching = state.replica?.watching
  byId('watching').replaceChildren(
    ...(watching
      ? [colorName(watching.color), ` for automatic rollback until ${time(watching.until)}`]
      : ['nothing (no automatic rollback pending)']),
  )
  if (!editingWeights) {
    byId('green-weight').value = String(weights.green)
    previewWeights()
  }
  renderRollout()
  renderStore()
  renderDrain()
  renderStandby()
  renderColors()
}

function renderRollout() {
  const rollout = state.rollout
  const box = byId('rollout')
  const running = rollout && (rollout.status === 'running' || rollout.status === 'paused')
  byId('rollout-actions').hidden = !running
  if (!rollout) {
    box.replaceChildren('No rollout has run since the last plain change.')
    return
  }
  const gates = rollout.gates ?? []
  const steps = h(
    'ol',
    { class: 'steps', 'aria-label': 'steps' },
    ...rollout.steps.map((weight, index) => {
      const gate = gates[index]
      const label = `${weight}%${gate?.type === 'manual' ? ', manual gate' : gate?.type === 'pause' ? `, pause ${gate.seconds} s` : ''}`
      const place = index < rollout.step ? 'done' : index === rollout.step ? 'current' : ''
      return h('li', {
        class: place,
        text: index === rollout.step ? `${label} (current)` : label,
        'aria-current': index === rollout.step ? 'step' : undefined,
      })
    }),
  )
  const lines = [
    h(
      'p',
      {},
      'To ',
      colorName(rollout.to),
      `: `,
      h('strong', { text: rollout.status }),
      ` · step ${rollout.step + 1} of ${rollout.steps.length}, ${rollout.stepSeconds} s each`,
    ),
    steps,
  ]
  const judged = state.replica?.rolloutStep
  if (running && judged) {
    lines.push(h('p', { text: `Step ends ${time(judged.endsAt)}; figures: ${judged.figures}` }))
    if (judged.waitingFor)
      lines.push(h('p', { class: 'over', text: `Held: waiting for ${judged.waitingFor}` }))
  }
  const waiting = rollout.waiting
  if (running && waiting) {
    const until = waiting.until
      ? ` until ${time(waiting.until)}${waiting.onTimeout ? `, then ${waiting.onTimeout}` : ''}`
      : ''
    const what = waiting.for === 'promote' ? 'waits for Promote' : 'pauses'
    lines.push(h('p', { class: 'over', text: `Gate: ${what} since ${time(waiting.since)}${until}` }))
  }
  if (rollout.status === 'paused')
    lines.push(h('p', { class: 'over', text: `Paused since ${time(rollout.pausedAt)}: Resume to go on.` }))
  if (rollout.outcome) lines.push(h('p', { text: `Outcome: ${rollout.outcome}` }))
  box.replaceChildren(...lines)
}

/** Whether the replica answering serves a state its store confirms (stale: the store does not answer). */
function renderStore() {
  const store = state.replica?.store
  if (!store) return
  const synced = store.lastSyncAt ? `, last in touch ${ago(store.lastSyncAt)}` : ''
  const restored = store.restoredFrom ? `, serving its local copy (${store.restoredFrom})` : ''
  byId('store').replaceChildren(
    `State store, as ${state.replica.id} sees it: `,
    h('span', {
      class: `badge ${store.stale ? 'bad' : 'good'}`,
      text: store.stale ? 'stale' : store.reachable ? 'reachable' : 'unreachable',
    }),
    `${synced}${restored}`,
  )
}

function renderDrain() {
  const drain = state.replica?.drain
  if (!drain) {
    byId('drain').textContent = '–'
    return
  }
  const parts = COLORS.map(
    (color) =>
      `${color}: open requests ${drain[color]?.requests ?? 0}, WebSockets ${drain[color]?.websockets ?? 0}`,
  )
  const record = drain.draining
  if (record && typeof record === 'object') {
    const done = record.drainedAt
      ? `drained here at ${time(record.drainedAt)} (the standby says when to scale it down)`
      : `draining since ${time(record.since)}${record.closesAt ? `, what is left closed at ${time(record.closesAt)}` : ''}`
    parts.push(`${record.color} lost its traffic: ${done}`)
  }
  byId('drain').textContent = parts.join(' · ')
}

/** The color kept after a change took all its traffic (GET /state's fleet view), every fact in words. */
function renderStandby() {
  const standby = state.standby
  const box = byId('standby')
  if (!standby || typeof standby !== 'object') {
    box.replaceChildren('No standby color kept.')
    return
  }
  const replicas = Array.isArray(standby.replicas) ? standby.replicas : []
  const drainedOn = replicas.filter((replica) => replica.drained).length
  const kept = Date.parse(standby.keepUntil) > Date.now()
  const safe = standby.safeToScaleDown === true
  // What it still waits for, in words.
  const notYet = [
    kept ? `kept until ${when(standby.keepUntil)}` : '',
    standby.drained ? '' : 'not drained on every replica yet',
  ].filter(Boolean)
  const items = [
    h('p', {}, colorName(standby.color ?? '?'), ` on standby since ${when(standby.since)}`),
    h(
      'dl',
      { class: 'facts' },
      h('dt', { text: 'Kept until' }),
      h('dd', { text: `${when(standby.keepUntil)}${kept ? '' : ' (over)'}` }),
      h('dt', { text: 'Drained' }),
      h('dd', {
        text: `on ${drainedOn} of ${replicas.length} replica${replicas.length === 1 ? '' : 's'}${standby.drained && standby.drainedAt ? ` (all by ${time(standby.drainedAt)})` : ''}`,
      }),
      h('dt', { text: 'Safe to scale down' }),
      h(
        'dd',
        { 'data-standby': 'safe' },
        h('span', { class: `badge ${safe ? 'good' : 'warn'}`, text: safe ? 'yes' : 'no' }),
        safe ? '' : `: ${notYet.join('; ') || 'not yet'}`,
      ),
    ),
  ]
  if (replicas.length > 0) {
    items.push(
      h(
        'ul',
        { class: 'plain', 'aria-label': 'drain per replica' },
        ...replicas.map((replica) =>
          h('li', {
            text: `${replica.id}: ${replica.drained ? `drained${replica.drainedAt ? ` ${time(replica.drainedAt)}` : ''}` : 'still draining'}`,
          }),
        ),
      ),
    )
  }
  box.replaceChildren(...items)
}

/** A time, with its date when it is not today (a standby is kept for a day by default). */
function when(iso) {
  if (!iso) return '–'
  const date = new Date(iso)
  if (Number.isNaN(date.getTime())) return String(iso)
  return date.toDateString() === new Date().toDateString()
    ? date.toLocaleTimeString()
    : `${date.toLocaleDateString()} ${date.toLocaleTimeString()}`
}

function renderReplicas(listing) {
  const generation = listing.generation ?? state?.generation ?? 0
  const rows = (listing.replicas ?? []).map((replica) => {
    const lag = generation - (replica.generation ?? 0)
    return h(
      'tr',
      {},
      h('td', { text: replica.id }),
      h('td', { text: replica.generation ?? '–' }),
      h(
        'td',
        {},
        h('span', {
          class: `badge ${lag > 0 ? 'warn' : 'good'}`,
          text: lag > 0 ? `${lag} behind` : 'current',
        }),
      ),
      h('td', { text: ago(replica.lastSeen) }),
    )
  })
  byId('replicas').tBodies[0].replaceChildren(...rows)
  const missing = listing.missing ?? []
  byId('missing').replaceChildren(
    ...(missing.length === 0
      ? ['No replica missing.']
      : [
          h('span', { class: 'badge bad', text: `${missing.length} missing` }),
          ` ${missing.map((replica) => `${replica.id} (last seen ${ago(replica.lastSeen)}, generation ${replica.generation})`).join(', ')}`,
        ]),
  )
}

function renderAudit(events) {
  byId('audit').tBodies[0].replaceChildren(
    ...events
      .slice()
      .reverse()
      .map((event) => {
        const to = event.to
          ? `${event.to.active} (${event.to.weights?.blue}/${event.to.weights?.green})`
          : (event.replica ?? '–')
        const result =
          event.result === 'refused'
            ? `refused ${event.code ?? ''}`
            : `${event.result}${event.generation ? ` → ${event.generation}` : ''}`
        return h(
          'tr',
          {},
          h('td', { text: time(event.at) }),
          h('td', { text: event.actor }),
          h('td', { text: event.action }),
          h(
            'td',
            {},
            h('span', { class: `badge ${event.result === 'refused' ? 'bad' : 'good'}`, text: result }),
          ),
          h('td', { text: to }),
          h('td', { text: event.reason || event.message || '' }),
        )
      }),
  )
}

/** One chart: a line over the span, the threshold dashed across it, and the latest figure and limit in words. */
function chart(color, title, points, pick, format, limit) {
  const width = 300
  const height = 60
  const values = points.map(pick)
  const top = Math.max(...values, limit ?? 0, 1e-9) * 1.15
  const x = (index) => (values.length <= 1 ? 0 : (index / (values.length - 1)) * width)
  const y = (value) => height - (value / top) * height
  const line = values.map((value, index) => `${x(index).toFixed(1)},${y(value).toFixed(1)}`).join(' ')
  const graphic = svg('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' })
  const latest = values.at(-1) ?? 0
  graphic.setAttribute(
    'aria-label',
    `${color} ${title}, last ${points.length} points: latest ${format(latest)}${limit ? `, limit ${format(limit)}` : ''}`,
  )
  graphic.append(
    svg('polygon', { class: `area fill-${color}`, points: `0,${height} ${line} ${width},${height}` }),
    svg('polyline', { class: `line stroke-${color}`, points: line, 'data-chart': `${color}-${title}` }),
  )
  if (limit) graphic.append(svg('line', { class: 'threshold', x1: 0, x2: width, y1: y(limit), y2: y(limit) }))
  return graphic
}

function renderColors() {
  const figures = windows?.colors
  const thresholds = windows?.thresholds
  if (windows) {
    const pooled = windows.problem
      ? windows.problem
      : windows.replicas > 1
        ? `pooled over ${windows.replicas} replicas`
        : 'this replica'
    byId('window-note').textContent =
      `(last ${windows.spanSeconds / 60} min in ${windows.stepSeconds} s steps, ${pooled}; figures over the last ${thresholds.windowSeconds} s)`
  }
  for (const color of COLORS) {
    const panel = byId(`color-${color}`)
    const parts = [h('h3', {}, colorName(color), state ? ` · weight ${state.weights[color]}%` : '')]
    const series = figures?.[color]
    if (series) {
      const now = series.window
      const limits = thresholds?.enabled ? thresholds : undefined
      const rows = [
        [
          'requests/s',
          (point) => point.rps,
          (value) => `${value.toFixed(value < 10 ? 2 : 0)} req/s`,
          undefined,
          now.rps,
        ],
        ['error ratio', (point) => point.errorRatio, percent, limits?.maxErrorRatio, now.errorRatio],
        [
          'p99 latency',
          (point) => point.p99,
          (value) => `${Math.round(value)} ms`,
          limits?.maxP99 || undefined,
          now.p99,
        ],
      ]
      for (const [title, pick, format, limit, current] of rows) {
        const over = limit !== undefined && current > limit && now.requests >= (thresholds?.minRequests ?? 0)
        parts.push(
          h(
            'div',
            { class: 'chart' },
            h(
              'div',
              { class: 'chart-head' },
              h('span', { text: title }),
              h('span', {
                class: over ? 'over' : '',
                'data-figure': `${color}-${title}`,
                text: `${format(current)}${over ? ' (over the limit)' : ''}`,
              }),
              h('span', {
                class: 'muted',
                text: limit === undefined ? `${now.requests} requests` : `limit ${format(limit)}`,
              }),
            ),
            chart(color, title, series.points, pick, format, limit),
          ),
        )
      }
    }
    const health = state?.replica?.health?.[color]
    if (Array.isArray(health)) {
      parts.push(
        h('p', { class: 'muted', text: 'Upstreams (as this replica sees them)' }),
        h(
          'ul',
          { class: 'plain' },
          ...health.map((upstream) =>
            h(
              'li',
              {},
              h('span', {
                class: `badge ${upstream.available ? 'good' : 'bad'}`,
                text: upstream.available ? 'available' : 'unavailable',
              }),
              ` ${upstream.url} · ${upstream.condition ?? ''}${upstream.lastCheck ? ` · ${upstream.lastCheck.detail}` : ''}`,
            ),
          ),
        ),
      )
    }
    panel.replaceChildren(...parts)
  }
}

// --- actions ---

/** Opens the confirmation dialog; `run(generation)` is called with the generation shown, on Confirm only. */
function confirmThen(title, text, what, run) {
  if (!state) return
  const generation = state.generation
  pending = { what, run: () => run(generation) }
  byId('confirm-title').textContent = title
  byId('confirm-text').textContent = text
  byId('confirm-generation').textContent =
    `Based on generation ${generation}, active ${state.active} (blue ${state.weights.blue}% / green ${state.weights.green}%). If someone changes the state first, nothing is done.`
  byId('confirm').showModal()
  byId('confirm-cancel').focus()
}

async function perform() {
  const action = pending
  pending = null
  byId('confirm').close()
  if (!action) return
  try {
    const result = await action.run()
    if (result && typeof result.generation === 'number' && typeof result.active === 'string') {
      state = result
      renderState()
      showAlert(
        [
          `${action.what}: done${result.changed === false ? ' (nothing to change)' : ''}; generation ${result.generation}, active ${result.active}.`,
        ],
        true,
      )
    }
  } catch (error) {
    showError(error, action.what)
    if (error instanceof ApiError && error.status === 409) await loadState()
  }
  loadAudit()
}

function change(path, body) {
  return api('POST', path, body)
}

function wire() {
  byId('confirm-ok').addEventListener('click', perform)
  byId('confirm-cancel').addEventListener('click', () => {
    pending = null
    byId('confirm').close()
  })
  byId('confirm').addEventListener('close', () => {
    pending = null
    // Confirmed or not, the slider follows the state again.
    editingWeights = false
  })
  for (const color of COLORS) {
    byId(`switch-${color}`).addEventListener('click', () =>
      confirmThen(`Switch to ${color}?`, switchText(color), `Switch to ${color}`, (expectedGeneration) =>
        change('/switch', { to: color, expectedGeneration }),
      ),
    )
  }
  byId('rollback').addEventListener('click', () =>
    confirmThen('Roll back?', rollbackText(), 'Roll back', (expectedGeneration) =>
      change('/rollback', { expectedGeneration }),
    ),
  )
  const slider = byId('green-weight')
  slider.addEventListener('input', () => {
    editingWeights = true
    previewWeights()
  })
  byId('weights-form').addEventListener('submit', (event) => {
    event.preventDefault()
    const green = Number(slider.value)
    confirmThen(
      'Set weights?',
      `Traffic is split blue ${100 - green}% / green ${green}%.`,
      'Set weights',
      (expectedGeneration) => {
        editingWeights = false
        return change('/weights', { blue: 100 - green, green, expectedGeneration })
      },
    )
  })
  const gate = (name, path, text) =>
    byId(`rollout-${name}`).addEventListener('click', () =>
      confirmThen(
        `${name[0].toUpperCase()}${name.slice(1)} the rollout?`,
        text,
        `${name[0].toUpperCase()}${name.slice(1)} the rollout`,
        (expectedGeneration) => change(path, { expectedGeneration }),
      ),
    )
  gate(
    'pause',
    '/rollout/pause',
    'The rollout stays at its current step until resumed (a failing step is still rolled back).',
  )
  gate('resume', '/rollout/resume', 'The rollout goes on from its current step.')
  gate('promote', '/rollout/promote', 'The rollout moves to its next step now.')
  byId('rollout-promote-full').addEventListener('click', () =>
    confirmThen(
      'Promote the rollout to 100%?',
      `${state?.rollout?.to ?? 'The new color'} gets all the traffic now, skipping the steps and gates left.`,
      'Promote to 100%',
      (expectedGeneration) => change('/rollout/promote', { full: true, expectedGeneration }),
    ),
  )
  gate('abort', '/rollout/abort', 'Traffic goes back to where the rollout started.')
  byId('rollout-form').addEventListener('submit', (event) => {
    event.preventDefault()
    let steps
    try {
      steps = parseSteps(byId('rollout-steps').value)
    } catch (error) {
      showAlert([`Start rollout: ${error.message}`])
      return
    }
    const to = byId('rollout-to').value
    const stepSeconds = Number(byId('rollout-seconds').value)
    const timeout = byId('gate-timeout').value
    const after = byId('gate-timeout-after').value.trim()
    const gating = timeout ? { [timeout]: after } : {}
    const onTimeout = timeout
      ? ` A manual gate not promoted within ${after} ${timeout === 'autoPromoteAfter' ? 'promotes itself' : 'aborts the rollout'}.`
      : ''
    confirmThen(
      `Start a rollout to ${to}?`,
      `${to} gets ${steps.map((step) => (typeof step === 'number' ? `${step}%` : `${step.weight}% (${step.gate ? 'waits for Promote' : `pause ${step.pause}`})`)).join(', then ')}, ${stepSeconds} s per step, each judged against the rollback thresholds.${onTimeout}`,
      'Start rollout',
      (expectedGeneration) => change('/rollout', { to, steps, stepSeconds, ...gating, expectedGeneration }),
    )
  })
  byId('smoke-form').addEventListener('submit', (event) => {
    event.preventDefault()
    const color = byId('smoke-color').value
    confirmThen(
      `Run smoke checks on ${color}?`,
      `The configured smoke checks are sent to ${color}'s upstreams now; traffic is not changed.`,
      'Run smoke checks',
      async () => {
        const result = await change('/smoke', { color })
        renderSmoke(result)
        return result
      },
    )
  })
  byId('token-form').addEventListener('submit', (event) => {
    event.preventDefault()
    useToken(byId('token').value.trim())
    showAlert(
      [currentToken() ? 'Token kept for this tab (session storage), sent with every call.' : 'No token.'],
      true,
    )
    loadMirror()
  })
  byId('forget-token').addEventListener('click', () => {
    useToken('')
    byId('token').value = ''
    showAlert(['Token forgotten.'], true)
  })
  byId('token').value = currentToken()
  wireMirror(confirmThen)
}

function switchText(color) {
  const other = color === 'blue' ? 'green' : 'blue'
  const plan = `All traffic goes to ${color} (${color} 100% / ${other} 0%), and ${color} is watched for an automatic rollback.`
  if (state?.weights[color] === 100 && !state.rollout?.status?.match(/running|paused/)) {
    return `${color} already has all the traffic: nothing will change.`
  }
  return state?.rollout?.status?.match(/running|paused/) ? `${plan} This ends the rollout in progress.` : plan
}

function rollbackText() {
  const rollout = state?.rollout
  if (rollout && /running|paused/.test(rollout.status)) {
    const { weights } = rollout.from
    return `The rollout is rolled back: traffic goes back to where it started, blue ${weights.blue}% / green ${weights.green}%.`
  }
  return 'Traffic goes back to the last routing before the one in force (the state store knows which).'
}

function previewWeights() {
  const green = Number(byId('green-weight').value)
  byId('weights-preview').textContent = `blue ${100 - green} / green ${green}`
}

/** "10, 50:manual, 75:30s, 100" -> [10, {weight: 50, gate: "manual"}, {weight: 75, pause: "30s"}, 100]. */
function parseSteps(text) {
  const steps = text
    .split(/[\s,]+/)
    .filter(Boolean)
    .map((item) => {
      const [weight, gate] = item.split(':')
      const value = Number(weight)
      if (!Number.isInteger(value)) throw new Error(`"${item}" is not a weight`)
      if (gate === undefined) return value
      return gate === 'manual' ? { weight: value, gate: 'manual' } : { weight: value, pause: gate }
    })
  if (steps.length === 0) throw new Error('give at least one step, ending at 100')
  return steps
}

function renderSmoke(result) {
  const checks = result.checks ?? []
  byId('smoke').replaceChildren(
    h(
      'p',
      {},
      colorName(result.color),
      ': ',
      h('span', {
        class: `badge ${result.passed ? 'good' : 'bad'}`,
        text: result.passed ? 'passed' : 'failed',
      }),
      checks.length === 0 ? ' (no smoke checks configured)' : '',
      result.trigger ? ` · ${smokeTrigger(result)}` : '',
    ),
    h(
      'ul',
      { class: 'plain' },
      ...checks.map((check) =>
        h('li', {
          text: `${check.passed ? 'pass' : 'FAIL'} · ${check.name ?? check.path ?? ''} ${check.detail ?? check.reason ?? ''}`,
        }),
      ),
    ),
  )
}

/** Why a run of the smoke checks happened, from its live event (or POST /smoke's answer). */
function smokeTrigger(run) {
  const why =
    run.trigger === 'demand'
      ? 'run on demand'
      : run.trigger === 'rollout-step'
        ? "run before the rollout's next step"
        : `run before a ${run.trigger}`
  return `${why}${run.retired ? ", the color's standby being over" : ''}`
}

wire()
loadAll()
follow()
setInterval(() => {
  loadWindows()
  loadReplicas()
  // The mirror's figures move with traffic, which sends no event.
  loadMirror()
  // Ages ("12 s ago") and the watch move on with the clock, events or not.
  loadState()
}, POLL_MS)
