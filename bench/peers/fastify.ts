// A peer for bench/peers.ts: @fastify/http-proxy (fastify, forwarding through undici) with its defaults.
// Usage: node bench/peers/fastify.ts PORT UPSTREAM_URL
import proxy from '@fastify/http-proxy'
import Fastify from 'fastify'

const [port, upstream] = process.argv.slice(2)
const app = Fastify({ logger: false })
await app.register(proxy, { upstream: upstream! })
await app.listen({ port: Number(port), host: '127.0.0.1' })
