// The console's small DOM vocabulary: elements, SVG, a color's name with its dot, times and ratios as text.

export const COLORS = ['blue', 'green']
const SVG = 'http://www.w3.org/2000/svg'

export const byId = (id) => document.getElementById(id)

/** An element with attributes (`class`, `text`, event handlers `on…`) and children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue
    if (name === 'text') element.textContent = String(value)
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value)
    else element.setAttribute(name, value === true ? '' : String(value))
  }
  element.append(...children.filter((child) => child !== null && child !== undefined))
  return element
}

export function svg(tag, attributes = {}) {
  const element = document.createElementNS(SVG, tag)
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value))
  return element
}

/** A color's name with a dot of its color before it: the name is always there, so color is never needed. */
export function colorName(color) {
  return h('span', { class: `dot is-${color}`, text: color })
}

export function time(iso) {
  if (!iso) return '–'
  const date = new Date(iso)
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString()
}

export function ago(iso) {
  if (!iso) return '–'
  const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000))
  return seconds < 90 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`
}

export function percent(ratio) {
  return `${(ratio * 100).toFixed(ratio < 0.01 && ratio > 0 ? 2 : 1)}%`
}
