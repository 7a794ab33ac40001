// A vitest reporter, used next to the default one, that ends the run with one plain line CI can read:
// "N passed, N failed" (plus ", N skipped" when any were skipped).
import type { SerializedError } from 'vitest';
import type { Reporter, TestModule, TestRunEndReason, Vitest } from 'vitest/node';

export default class PlainSummaryReporter implements Reporter {
  private vitest: Vitest | undefined;

  onInit(vitest: Vitest): void {
    this.vitest = vitest;
  }

  onTestRunEnd(
    testModules: ReadonlyArray<TestModule>,
    unhandledErrors: ReadonlyArray<SerializedError>,
    _reason: TestRunEndReason,
  ): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const testModule of testModules) {
      for (const testCase of testModule.children.allTests()) {
        const state = testCase.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else if (state === 'skipped') skipped++;
      }
      // A file that does not load, or a failing beforeAll/afterAll, can fail the run without failing any one test;
      // each such file or suite counts as one failure so that the line never says "0 failed" for a red run.
      for (const suite of [testModule, ...testModule.children.allSuites()]) {
        if (suite.errors().length > 0) failed++;
      }
    }
    failed += unhandledErrors.length;

    const line = `${passed} passed, ${failed} failed` + (skipped > 0 ? `, ${skipped} skipped` : '');
    // Called after the default reporter's summary (reporters run in the order listed), so this is the last line.
    if (this.vitest) this.vitest.logger.log(line);
    else process.stdout.write(`${line}\n`);
  }
}
