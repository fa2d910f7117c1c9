'use strict';
// Tutorial 4: routing -- direct exchange, binding keys = log severities.
const { test, afterEach } = require('node:test');
const h = require('./helpers');

afterEach(h.cleanup);

test('direct exchange routes by severity', { timeout: h.TEST_TIMEOUT }, async () => {
  await h.checkRouting('direct', 'direct_logs',
    {
      errors_to_disk: ['error'],
      all_to_screen: ['info', 'warning', 'error'],
      warnings: ['warning'],
      // binding the same key twice is idempotent: still one copy
      dup_binding: ['info', 'info'],
    },
    ['info', 'error', 'warning', 'debug', 'error', 'info', 'critical', 'warning', 'error',
      'Error', 'info.x', ''],
    {
      errors_to_disk: ['error'],
      all_to_screen: ['info', 'warning', 'error'],
      warnings: ['warning'],
      dup_binding: ['info'],
    });
});

test('direct exchange: several queues bound with the same key', { timeout: h.TEST_TIMEOUT }, async () => {
  await h.checkRouting('direct', 'direct_multi',
    { q1: ['black'], q2: ['black', 'green'], q3: ['orange'] },
    ['black', 'green', 'orange', 'black', 'blue'],
    { q1: ['black'], q2: ['black', 'green'], q3: ['orange'] });
});
