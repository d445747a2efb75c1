// The console's mirror panel: the share of live requests copied to the idle color, how their answers compared
// (GET /mirror: this replica's figures), the latest differences (GET /mirror/diffs), and turning it on or off
// (POST /mirror, through the same confirmation and expectedGeneration as every change). A proxy without a mirror
// answers GET /mirror 404: the panel then stays hidden.

import { ApiError, api, currentToken } from './api.js'
import { byId, COLORS, colorName, h, percent, time } from './dom.js'

/** How many differences the panel lists (GET /mirror/diffs keeps `mirror.diffs`). */
const DIFFS_SHOWN = 8

/** The last GET /mirror answer, or null before the first or when this proxy does not mirror. */
let status = null
/** The operator is typing a share: leave the field alone. */
let editingPercent = false
/**
 * The token GET /mirror/diffs last refused (401), '' for none: not sent again for the differences until another
 * is entered, so a wrong one is not tried every few seconds (which would get this address blocked, 429).
 */
let diffsRefusedWith = null

export async function loadMirror() {
  const card = byId('mirror-card')
  try {
    const [answer] = await Promise.all([api('GET', '/mirror'), loadDiffs()])
    status = answer
    card.hidden = false
    card.dataset.answered = '200'
    renderStatus()
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      // "this proxy does not mirror": nothing to show or to turn on.
      status = null
      card.hidden = true
      card.dataset.answered = '404'
      return
    }
    byId('mirror-status').replaceChildren(
      h('p', { class: 'over', text: `Mirror figures unavailable: ${error.message}` }),
    )
  }
}

function renderStatus() {
  const { enabled, results, dropped, window, mismatchedRoutes, noise, lastError, config } = status
  const methods = config?.methods?.join(', ') ?? 'GET, HEAD'
  const prefixes = config?.pathPrefixes?.length ? ` under ${config.pathPrefixes.join(', ')}` : ''
  const lines = [
    h(
      'p',
      {},
      h('span', { class: `badge ${enabled ? 'good' : 'warn'}`, text: enabled ? 'on' : 'off' }),
      enabled
        ? ` copying ${status.percent}% of ${methods} requests${prefixes} to the idle color, since ${time(status.since)}`
        : ' no request is copied',
    ),
    h(
      'p',
      { 'data-mirror': 'results' },
      `Results: match ${results.match}, mismatch ${results.mismatch}, error ${results.error}, dropped ${results.dropped}`,
      ` (over the limit in flight ${dropped.inFlight}, body too large ${dropped.bodyTooLarge}, live answer failed ${dropped.liveFailed}, noise not known yet ${dropped.noiseUnknown ?? 0}); in flight ${status.inFlight}`,
    ),
    h(
      'ul',
      { class: 'plain', 'aria-label': 'mismatch ratio per color' },
      ...COLORS.map((color) => {
        const figures = window[color]
        return h(
          'li',
          {},
          'to ',
          colorName(color),
          figures.compared === 0
            ? `: nothing compared in the last ${window.seconds} s`
            : `: ${figures.mismatched} of ${figures.compared} differed (${percent(figures.ratio)}) over the last ${window.seconds} s`,
        )
      }),
    ),
  ]
  const gate = config?.gate
  const gated = Object.entries(gate?.on ?? {})
    .filter(([, on]) => on)
    .map(([change]) => change)
  if (gated.length > 0) {
    lines.push(
      h('p', {
        class: 'muted',
        text: `Gate before ${gated.join(', ')}: at most ${percent(gate.maxMismatchRatio)} mismatched over at least ${gate.minCompared} compared`,
      }),
    )
  }
  if (mismatchedRoutes.length > 0) {
    lines.push(
      h('h3', { text: 'Routes that differ' }),
      h(
        'ul',
        { class: 'plain' },
        ...mismatchedRoutes.map((route) =>
          h('li', { text: `${route.route}: ${route.mismatched} of ${route.compared}` }),
        ),
      ),
    )
  }
  if (noise?.noisy?.length > 0) {
    lines.push(
      h('h3', { text: 'Learned noise (not counted)' }),
      h(
        'ul',
        { class: 'plain' },
        ...noise.noisy.map((route) => h('li', {}, `${route.route}: `, ...codes(route.fields))),
      ),
    )
  }
  if (lastError)
    lines.push(h('p', { class: 'over', text: `Last error ${time(lastError.at)}: ${lastError.message}` }))
  byId('mirror-status').replaceChildren(...lines)
  const field = byId('mirror-percent')
  if (!editingPercent && document.activeElement !== field && status.percent)
    field.value = String(status.percent)
}

function codes(fields) {
  return fields.flatMap((field, index) => [index > 0 ? ', ' : '', h('code', { text: field })])
}

/** The differences hold users' data: with tokens configured, GET /mirror/diffs needs one, as a change does. */
async function loadDiffs() {
  const token = currentToken()
  if (token === diffsRefusedWith) return
  try {
    const listing = await api('GET', `/mirror/diffs?limit=${DIFFS_SHOWN}`)
    renderDiffs(listing?.diffs ?? [])
  } catch (error) {
    if (!(error instanceof ApiError) || error.status === 404) throw error
    if (error.status === 401) diffsRefusedWith = token
    diffsNote(
      error.status === 401
        ? `The differences hold users' data: enter the admin token to see them (${error.code}).`
        : `Differences unavailable: ${error.message}`,
    )
  }
}

function diffsNote(text) {
  byId('mirror-diffs').tBodies[0].replaceChildren(h('tr', {}, h('td', { colspan: 4, class: 'muted', text })))
}

function renderDiffs(diffs) {
  byId('mirror-diffs').tBodies[0].replaceChildren(
    ...(diffs.length === 0
      ? [h('tr', {}, h('td', { colspan: 4, class: 'muted', text: 'No difference kept.' }))]
      : diffs.map((diff) =>
          h(
            'tr',
            {},
            h('td', { text: time(diff.at) }),
            h('td', {}, h('code', { text: `${diff.method} ${diff.path}` })),
            h('td', {
              text: `${diff.colors.live} ${diff.status.live} / ${diff.colors.mirror} ${diff.status.mirror}`,
            }),
            h(
              'td',
              {},
              ...codes(diff.fields),
              h(
                'details',
                {},
                h('summary', { text: 'answers' }),
                h('pre', {
                  text: `${diff.colors.live}: ${diff.bodies.live}\n${diff.colors.mirror}: ${diff.bodies.mirror}${diff.bodies.truncated ? '\n(cut short)' : ''}`,
                }),
              ),
            ),
          ),
        )),
  )
}

/**
 * The on/off controls. `confirmThen(title, text, what, run)` is the console's confirmation dialog; `run` gets the
 * generation the dialog showed, sent as expectedGeneration (a 409 is shown as for any change).
 */
export function wireMirror(confirmThen) {
  const field = byId('mirror-percent')
  field.addEventListener('input', () => {
    editingPercent = true
  })
  byId('mirror-form').addEventListener('submit', (event) => {
    event.preventDefault()
    const share = Number(field.value)
    const methods = status?.config?.methods?.join(', ') ?? 'GET and HEAD'
    confirmThen(
      `Mirror ${share}% of requests?`,
      `${share}% of ${methods} requests are copied to the idle color and its answers compared with the live ones; clients are still answered by the live color alone. The figures start afresh.`,
      'Turn mirroring on',
      (expectedGeneration) => {
        editingPercent = false
        return changeMirror({ percent: share, expectedGeneration })
      },
    )
  })
  byId('mirror-off').addEventListener('click', () =>
    confirmThen(
      'Turn mirroring off?',
      'No more requests are copied to the idle color; the share is kept for the next time it is turned on.',
      'Turn mirroring off',
      (expectedGeneration) => changeMirror({ enabled: false, expectedGeneration }),
    ),
  )
}

async function changeMirror(body) {
  const result = await api('POST', '/mirror', body)
  loadMirror()
  return result
}
