/**
 * The `flotilla` command line.
 */
import { Command, Option } from 'commander'
import { loadConfig, ConfigError } from './config.js'
import { createLogger } from './logger.js'
import { RegistryNode } from './node.js'

const program = new Command()
program
  .name('flotilla')
  .description('A container registry that runs as a cluster of equal peers.')
  .showHelpAfterError()

program.command('serve')
  .description('run a registry node (data in --data, HTTP API on --listen)')
  .option('--data <dir>', 'data directory (default ./data, env FLOTILLA_DATA)')
  .option('--listen <host:port>', 'HTTP address (default 127.0.0.1:5000, env FLOTILLA_LISTEN)')
  .option('--config <file>', 'YAML configuration file (env FLOTILLA_CONFIG)')
  .addOption(new Option('--log-level <level>', 'log level (env FLOTILLA_LOG_LEVEL)').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']))
  .action(async (opts: { data?: string; listen?: string; config?: string; logLevel?: string }) => {
    const config = await loadConfig(opts)
    const log = createLogger(config.log.level)
    const node = await RegistryNode.open(config, log)
    let stopping = false
    const shutdown = (signal: string): void => {
      if (stopping) return
      stopping = true
      log.info({ signal }, 'shutting down')
      node.stop().then(() => process.exit(0), (err: unknown) => { log.error({ err }, 'shutdown failed'); process.exit(1) })
    }
    process.on('SIGTERM', () => shutdown('SIGTERM'))
    process.on('SIGINT', () => shutdown('SIGINT'))
    await node.start()
  })

try {
  await program.parseAsync(process.argv)
} catch (err) {
  const msg = err instanceof ConfigError ? err.message : `flotilla: ${(err as Error).message}`
  process.stderr.write(msg + '\n')
  process.exit(1)
}
