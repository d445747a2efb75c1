import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process'
import { CLI } from './servers.ts'

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

const running = new Set<ChildProcess>()

/** Runs the CLI to completion (killed after 10 s) with none of the caller's BLUEGREEN_* settings. */
export function runCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, BLUEGREEN_ADMIN: undefined, BLUEGREEN_ADMIN_TOKEN: undefined, ...options.env },
      cwd: options.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    running.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => {
      stdout += chunk
    })
    child.stderr.on('data', (chunk) => {
      stderr += chunk
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      running.delete(child)
      resolve({ code, stdout, stderr })
    })
  })
}

/** For afterAll: no CLI outlives its test file. */
export function killRunningClis(): void {
  for (const child of running) child.kill('SIGKILL')
}

/** A child process whose stdout and stderr are gathered, interleaved as they came, into one string. */
export interface Collecting {
  child: ChildProcess
  output(): string
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>
}

/** Spawns `program` with its output collected (see Collecting); the caller kills it. */
export function spawnCollecting(
  program: string,
  args: string[],
  options: Omit<SpawnOptions, 'stdio'> = {},
): Collecting {
  const child = spawn(program, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const append = (chunk: Buffer) => {
    output += chunk
  }
  child.stdout!.on('data', append)
  child.stderr!.on('data', append)
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  return { child, output: () => output, exited }
}
