// The Lua scripts of the Redis state store. Each runs atomically in Redis, which is what makes a change one
// compare-and-set however many replicas race for it.

import type { Redis } from 'ioredis'

// KEYS[1] the state hash. ARGV: expected generation or '', the new state's JSON without its generation, channel,
// the generation this replica has applied, a deadline in Redis's clock (ms), and when a standby this change starts
// ends (ISO time).
// Returns {1, state} on success, {2, stored state} when the change would leave the stored state as it is (nothing
// written or published), {0, generation} on a stale expectation, {-1} when there is no state, {-2, why}
// when the stored state is unreadable (the change is refused rather than burying the evidence), {-3} past the
// deadline. The deadline matters because a command that timed out on the client is still in Redis's socket: a
// paused or overloaded Redis would otherwise run it later, making a change the caller was told (503) was not made.
// The new generation is above both the stored one and this replica's, so a Redis that lost its last writes (a
// restart without persistence, a failover to a lagging replica) can never hand out a generation already used; for
// the same reason a Redis behind this replica is written to even by a change that alters nothing.
// "Alters nothing" and the state kept as replaced follow changesNothing and replacedState in state.ts: the same
// active color and weights, and no rollout in progress (running or paused) on either side, and the mirror setting
// asked for (if any) is the stored one; keep the two in step.
export const CHANGE = `
local time = redis.call('TIME')
if tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) > tonumber(ARGV[5]) then return {-3} end
local stored = redis.call('HGET', KEYS[1], 'state')
if not stored then return {-1} end
local generation = tonumber(redis.call('HGET', KEYS[1], 'generation'))
local ok, decoded = pcall(cjson.decode, stored)
if not generation or not ok or type(decoded) ~= 'table' or decoded.generation ~= generation then
  return {-2, 'the stored state is not valid JSON or disagrees with its generation'}
end
local base = math.max(generation, tonumber(ARGV[4]))
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= base then return {0, base} end
local wanted = cjson.decode(ARGV[2])
local function routing(state)
  if type(state.weights) ~= 'table' then return '' end
  return tostring(state.active) .. ' ' .. tostring(state.weights.blue) .. ' ' .. tostring(state.weights.green)
end
local function running(state)
  return type(state.rollout) == 'table' and (state.rollout.status == 'running' or state.rollout.status == 'paused')
end
local function sameMirror()
  if type(wanted.mirror) ~= 'table' then return true end
  return type(decoded.mirror) == 'table' and decoded.mirror.enabled == wanted.mirror.enabled
    and decoded.mirror.percent == wanted.mirror.percent
end
local sameRouting = routing(decoded) == routing(wanted)
if sameRouting and generation >= base and not running(decoded) and not running(wanted) and sameMirror() then
  return {2, stored}
end
local next = base + 1
-- The standby record, as nextStandby in standby.ts decides it: keep the two in step.
local function weight(state, color)
  if type(state.weights) ~= 'table' then return 0 end
  return tonumber(state.weights[color]) or 0
end
local standby = decoded.standby
if type(standby) ~= 'table' then standby = nil end
for _, color in ipairs({'blue', 'green'}) do
  if weight(decoded, color) > 0 and weight(wanted, color) == 0 then
    standby = {color = color, since = wanted.updatedAt, keepUntil = ARGV[6], generation = next}
  end
end
if standby and weight(wanted, standby.color) > 0 then standby = nil end
local body = ARGV[2]
-- A change that names no mirror setting keeps the stored one (keepingMirror in state.ts).
if type(wanted.mirror) ~= 'table' and type(decoded.mirror) == 'table' then
  body = string.sub(body, 1, -2) .. ',"mirror":{"enabled":' .. tostring(decoded.mirror.enabled == true)
    .. ',"percent":' .. string.format('%d', decoded.mirror.percent) .. '}}'
end
if standby then body = string.sub(body, 1, -2) .. ',"standby":' .. cjson.encode(standby) .. '}' end
local state = '{"generation":' .. next .. ',' .. string.sub(body, 2)
local previous = stored
if sameRouting then previous = redis.call('HGET', KEYS[1], 'previous') end
redis.call('HSET', KEYS[1], 'state', state, 'generation', next)
if previous then redis.call('HSET', KEYS[1], 'previous', previous) else redis.call('HDEL', KEYS[1], 'previous') end
redis.call('PUBLISH', ARGV[3], state)
return {1, state}
`

// Writes a state only when Redis has none or an older one: the initial state on first start, and this replica's
// last state when Redis lost its data (a restart without persistence). Generations never go backwards, and an
// unreadable hash is left alone for an operator to look at.
// ARGV: generation, state JSON, previous JSON or '', channel. Returns 1 when written.
export const SEED = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  local stored = tonumber(redis.call('HGET', KEYS[1], 'generation'))
  if not stored or stored >= tonumber(ARGV[1]) then return 0 end
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'generation', ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'previous', ARGV[3]) else redis.call('HDEL', KEYS[1], 'previous') end
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
`

// Reads the state with Redis's clock, so the replica knows the offset between its clock and Redis's (for the
// change deadline above). Returns {seconds, microseconds, state}, without the state when there is none.
export const READ = `
local time = redis.call('TIME')
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {time[1], time[2]} end
return {time[1], time[2], state}
`

export interface ScriptedRedis extends Redis {
  bluegreenChange(
    key: string,
    expected: string,
    body: string,
    channel: string,
    floor: string,
    deadline: string,
    keepUntil: string,
  ): Promise<[number, string?]>
  bluegreenRead(key: string): Promise<string[]>
  bluegreenSeed(
    key: string,
    generation: string,
    state: string,
    previous: string,
    channel: string,
  ): Promise<number>
}
