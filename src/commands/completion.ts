/** `ploopvault completion bash`: print the shell completion script (src/ops/completion.ts). */
import { Command } from "commander";
import { UsageError } from "../errors.js";
import { bashCompletion, completionModel } from "../ops/completion.js";
import { TOOL_NAME, TOOL_VERSION } from "../version.js";

export function completionCommand(): Command {
  return new Command("completion")
    .description("print a shell completion script (bash)")
    .argument("[shell]", "the shell: bash", "bash")
    .addHelpText(
      "after",
      `
Examples:
  ploopvault completion bash > /etc/bash_completion.d/ploopvault
  source <(ploopvault completion bash)`,
    )
    .action(function (this: Command, shell: string) {
      if (shell !== "bash") throw new UsageError(`completion: shell "${shell}" is not supported (only bash)`);
      const program = this.parent;
      if (program === null) throw new Error("completion: the command is not attached to the program");
      process.stdout.write(bashCompletion(TOOL_NAME, completionModel(program), TOOL_VERSION));
    });
}
